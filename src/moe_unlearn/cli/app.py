"""The typer application that every subcommand module registers on."""

import typer

from moe_unlearn import __version__

app = typer.Typer(
    name="moe-unlearn",
    help="Machine unlearning for Mixture-of-Experts language models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
benchmark_app = typer.Typer(help="The embedded offline benchmark.", no_args_is_help=True)
app.add_typer(benchmark_app, name="benchmark")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"moe-unlearn {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Machine unlearning for Mixture-of-Experts language models."""
