"""The typer application that every subcommand module registers on."""

import typer

app = typer.Typer(
    name="moe-unlearn",
    help="Machine unlearning for Mixture-of-Experts language models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
benchmark_app = typer.Typer(help="The embedded offline benchmark.", no_args_is_help=True)
app.add_typer(benchmark_app, name="benchmark")
