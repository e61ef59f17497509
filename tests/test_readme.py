"""Every command of the README, as a user pastes it into bash: split with the shell's rules and, for run.py,
`prunelab.profile` and `prunelab.evaluate` commands, composed by Hydra and checked against the config rules (not run);
scripts it names exist.  A bash block holds commands only (a pasted block runs every line): what a command prints
goes into a ```text block."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from prunelab.config import compose_config
from prunelab.validate import validate

REPO = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"```bash\n(.*?)```", re.S)
OPENING = re.compile(r"^```(.*)$", re.M)
PROGRAMS = {"python", "pip", "torchrun", "wandb"}  # what the README's commands start with


def readme_commands() -> list[list[str]]:
    """The README's bash commands as argument lists (continuation lines joined, comments dropped)."""
    text = (REPO / "README.md").read_text()
    commands = []
    for block in FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(words)
    return commands


def first_values(overrides: list[str]) -> list[str]:
    """A multirun's overrides with each sweep replaced by its first value (what one job composes)."""
    out = []
    for item in OverridesParser.create().parse_overrides(overrides):
        value = next(iter(item.sweep_iterator())) if item.is_sweep_override() else item.value()
        text = item.get_value_element_as_str() if not item.is_sweep_override() else str(value)
        out.append(f"{item.input_line.partition('=')[0]}={text}")
    return out


COMMANDS = readme_commands()


def test_the_readme_has_commands() -> None:
    assert len(COMMANDS) > 20


def test_every_readme_block_is_commands_or_text() -> None:
    languages = OPENING.findall((REPO / "README.md").read_text())[::2]  # the opening fence of each block
    assert set(languages) == {"bash", "text"}, languages
    outputs = [" ".join(words)[:70] for words in COMMANDS
               if next(w for w in words if not re.match(r"[A-Z_][A-Z0-9_]*=", w)) not in PROGRAMS]  # VAR=x python
    assert not outputs, f"output lines in bash blocks (move them into a ```text block): {outputs}"


@pytest.mark.parametrize("words", COMMANDS, ids=[" ".join(w)[:70] for w in COMMANDS])
def test_a_readme_command_parses_and_composes(words: list[str]) -> None:
    if "run.py" in words:
        overrides = [w for w in words[words.index("run.py") + 1:] if w not in ("-m", "--multirun")]
    elif words[:3] in (["python", "-m", "prunelab.profile"],):
        overrides = [w for w in words[3:] if not w.startswith("--")]
    else:
        scripts = [w for w in words if w.endswith(".py") and "/" in w]
        assert all((REPO / s).is_file() for s in scripts), scripts
        return
    overrides = [o for o in overrides if not o.startswith("hydra.")]
    validate(compose_config(first_values(overrides)))  # every key keeps its rule (prunelab/validate.py)
