"""Entry point: runs the typer app and turns user mistakes into one line and exit code 2."""

from __future__ import annotations

import importlib
import sys

import typer

from moe_unlearn.cli.app import app
from moe_unlearn.errors import RunFailure, UserError, os_failure

# Each module registers its subcommand on `app` when imported.
COMMAND_MODULES = ["inspect", "benchmark", "unlearn", "finetune", "eval", "report", "demo", "memory", "check"]


def _load_commands() -> None:
    """Import every command module; a module that fails to import is a bug and raises."""
    for name in COMMAND_MODULES:
        importlib.import_module(f"moe_unlearn.cli.{name}")


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code: 0, 1 for run failures, 2 for user mistakes."""
    _load_commands()
    try:
        # without standalone mode typer RETURNS the code of a typer.Exit, and turns Ctrl-C into Exit(130)
        code = app(args=argv, prog_name="moe-unlearn", standalone_mode=False)
    except typer.Exit as e:
        code = e.exit_code
    except (typer.Abort, KeyboardInterrupt):
        code = 130
    except typer.exceptions.TyperException as e:  # usage errors: bad option, missing argument
        if type(e).__name__ == "NoArgsIsHelpError":
            return 0
        text = e.format_message() if hasattr(e, "format_message") else str(e)  # names the option
        print(f"moe-unlearn: error: {' '.join(text.split())}", file=sys.stderr)
        return 2
    except UserError as e:
        print(f"moe-unlearn: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except RunFailure as e:
        print(f"moe-unlearn: failed: {_one_line(e)}", file=sys.stderr)
        return 1
    except Exception as e:  # the machine said no (disk full, permission denied), in any writer's words
        reason = os_failure(e)
        if reason is None:
            raise  # a bug: keep its traceback
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"moe-unlearn: failed: {reason}{where}", file=sys.stderr)
        return 1
    if code == 130:
        print("moe-unlearn: interrupted", file=sys.stderr)
    return code if isinstance(code, int) else 0


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())


def main() -> None:
    """Console-script entry point."""
    sys.exit(run())


if __name__ == "__main__":
    main()
