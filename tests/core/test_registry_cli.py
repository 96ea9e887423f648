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


def test_cli_version(capsys):
    from moe_unlearn import __version__

    assert run(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"moe-unlearn {__version__}"


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["inspect", "--help"], ["demo", "--help"]])
def test_help_and_version_import_neither_torch_nor_transformers(argv):
    """Heavy imports live inside the commands, so --help answers at once (a fresh interpreter)."""
    import subprocess
    import sys

    code = ("import sys; from moe_unlearn.cli.main import run; rc = run(%r); "
            "print(rc, sorted(m for m in ('torch', 'transformers') if m in sys.modules))" % argv)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert out.strip().splitlines()[-1] == "0 []"


def _plugin_package(root, name: str, modules: dict[str, str]):
    pkg = root / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text(f"from moe_unlearn.registry import Registry\nREG = Registry('thing', package='{name}')\n")
    for mod, body in modules.items():
        (pkg / f"{mod}.py").write_text(body)


def test_registry_discovers_every_module_of_its_package(tmp_path, monkeypatch):
    _plugin_package(tmp_path, "plug_ok", {"a": "from plug_ok import REG\nREG.register('a')(1)\n",
                                          "b": "from plug_ok import REG\nREG.register('b')(2)\n"})
    monkeypatch.syspath_prepend(str(tmp_path))
    import plug_ok

    assert plug_ok.REG.names() == ["a", "b"] and plug_ok.REG.get("b") == 2 and "a" in plug_ok.REG


def test_registry_discovery_fails_loudly_on_a_broken_module(tmp_path, monkeypatch):
    _plugin_package(tmp_path, "plug_bad", {"a": "from plug_bad import REG\nREG.register('a')(1)\n",
                                           "b": "raise RuntimeError('broken plugin')\n"})
    monkeypatch.syspath_prepend(str(tmp_path))
    import plug_bad

    with pytest.raises(RuntimeError, match="broken plugin"):
        plug_bad.REG.names()
    with pytest.raises(RuntimeError, match="broken plugin"):  # not silently half-discovered afterwards
        plug_bad.REG.get("a")


def test_cli_fails_loudly_when_a_command_module_cannot_be_imported(monkeypatch):
    import moe_unlearn.cli.main as cli_main

    monkeypatch.setattr(cli_main, "COMMAND_MODULES", [*cli_main.COMMAND_MODULES, "no_such_command_module"])
    with pytest.raises(ModuleNotFoundError, match="no_such_command_module"):
        run(["--help"])


@pytest.mark.parametrize("command", ["unlearn", "finetune", "check", "memory"])
@pytest.mark.parametrize("case", ["missing", "not yaml", "bad override", "missing base"])
def test_a_broken_config_is_refused_before_torch_loads(tmp_path, command, case):
    """A config file that is missing or not YAML, a base file that is missing, an override without
    '=': one line and exit 2 from a fresh interpreter that never imported torch or transformers."""
    import subprocess
    import sys

    config, overrides = tmp_path / "run.yaml", []
    if case == "not yaml":
        config.write_text("method: [ga\n")
    elif case == "bad override":
        config.write_text("method: ga\n")
        overrides = ["train.lr"]
    elif case == "missing base":
        config.write_text("base: nowhere.yaml\nmethod: ga\n")
    code = ("import sys; from moe_unlearn.cli.main import run; rc = run(%r); "
            "print(rc, sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
            % [command, str(config), *overrides])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip().splitlines()[-1] == "2 []", done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("moe-unlearn: error: "), done.stderr
    assert ("nowhere.yaml" if case == "missing base" else "train.lr" if case == "bad override" else "run.yaml") in lines[0]
