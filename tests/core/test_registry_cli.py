"""Registry behaviour and the CLI's error contract."""

import pytest

from moe_unlearn.cli.main import run
from moe_unlearn.errors import UserError
from moe_unlearn.registry import Registry


def test_registry_rejects_duplicates_and_suggests():
    reg: Registry[int] = Registry("method")
    reg.register("graddiff")(1)
    with pytest.raises(ValueError):
        reg.register("graddiff")(2)
    with pytest.raises(UserError, match="unknown method 'gradiff' \\(did you mean 'graddiff'\\?\\)"):
        reg.get("gradiff")
    assert reg.get("graddiff") == 1 and reg.names() == ["graddiff"]


def test_cli_unknown_command_is_one_line_exit_2(capsys):
    assert run(["no-such-command"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("moe-unlearn: error:") and "\n" not in err


def test_cli_help_exits_0(capsys):
    assert run(["--help"]) == 0
    assert "unlearning" in capsys.readouterr().out.lower()
