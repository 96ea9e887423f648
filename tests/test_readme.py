"""The README is a front door: short, and every link and command in it (and every link in docs/)
points at something that exists."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import typer

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_LINES = 200
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`([^`\n]+)`")


def _docs() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


def broken_links(doc: Path) -> list[str]:
    """Relative link targets of a markdown file that name no file or folder (anchors dropped)."""
    out = []
    for target in LINK.findall(doc.read_text(encoding="utf-8")):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue  # a URL or an anchor in the same file
        if not (doc.parent / target.split("#")[0]).exists():
            out.append(f"{doc.name}: {target}")
    return out


def cli_commands() -> dict[str, set[str]]:
    """{subcommand: its nested subcommands} as the CLI registers them."""
    from moe_unlearn.cli.app import app
    from moe_unlearn.cli.main import _load_commands

    _load_commands()
    group = typer.main.get_command(app)
    return {name: set(getattr(cmd, "commands", {})) for name, cmd in group.commands.items()}


def shown_commands(text: str) -> list[list[str]]:
    """The commands a markdown text shows: each line of its code blocks, each inline `moe-unlearn ...`
    or `bash ...` span, split into words (continuation lines joined, comments dropped)."""
    lines = [ln for block in FENCE.findall(text) for ln in block.replace("\\\n", " ").splitlines()]
    lines += [span for span in INLINE.findall(text) if span.startswith(("moe-unlearn ", "bash "))]
    out = []
    for line in lines:
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue  # not shell (YAML, Python)
        if words:
            out.append(words)
    return out


def problems(text: str, commands: dict[str, set[str]]) -> list[str]:
    """What the shown commands name that does not exist: a moe-unlearn subcommand, a script, a config."""
    found = []
    for words in shown_commands(text):
        for i, word in enumerate(words):
            if word.rstrip(")").endswith("moe-unlearn") and i + 1 < len(words) and not words[i + 1].startswith("-"):
                sub = words[i + 1]
                if sub not in commands:
                    found.append(f"moe-unlearn {sub}: no such command")
                elif commands[sub] and (i + 2 >= len(words) or words[i + 2] not in commands[sub]):
                    found.append(f"moe-unlearn {sub} {' '.join(words[i + 2:i + 3])}: no such subcommand")
            if re.match(r"^(scripts|configs)/", word) and not (ROOT / word).exists():
                found.append(f"{word}: no such file")
    return found


def test_readme_is_short():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, f"README.md has {n} lines; move measurements to docs/results.md (limit {MAX_LINES})"


def test_links_point_at_files():
    assert [b for doc in _docs() for b in broken_links(doc)] == []


def test_readme_commands_exist():
    text = README.read_text(encoding="utf-8")
    commands = cli_commands()
    assert {"unlearn", "eval", "report", "demo", "benchmark"} <= set(commands)
    shown = shown_commands(text)
    assert ["bash", "scripts/demo.sh"] in shown and ["bash", "scripts/test.sh"] in shown
    assert sum(w == "moe-unlearn" for ws in shown for w in ws) >= 8  # the parser saw the commands
    assert problems(text, commands) == []


def test_the_checks_catch_what_points_at_nothing(tmp_path):
    commands = cli_commands()
    bad = ("```bash\nmoe-unlearn unlern configs/methods/npo.yaml --out x\nbash scripts/nope.sh\n"
           "moe-unlearn benchmark bild --out b\n```\nrun `moe-unlearn unlearn configs/methods/nope.yaml`\n")
    assert problems(bad, commands) == ["moe-unlearn unlern: no such command", "scripts/nope.sh: no such file",
                                       "moe-unlearn benchmark bild: no such subcommand",
                                       "configs/methods/nope.yaml: no such file"]
    doc = tmp_path / "x.md"
    doc.write_text("[a](missing.md) [b](https://example.org) [c](x.md#top) ![d](figures/none.png)\n")
    assert broken_links(doc) == ["x.md: missing.md", "x.md: figures/none.png"]
