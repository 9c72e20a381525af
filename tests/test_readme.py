"""The README's commands compose, validate and find their data as pasted (no `data.root`).

Each `python -m src.train ...` and `python -m pipelines.study ...` line of the README's bash
blocks is composed with its overrides and turned into the typed config, which is where a
run would first refuse it. Training them all is what `make` and the other tests do.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from src.config import to_config
from src.data import MNIST, default_root, locate_files
from src.tracking import PROJECT_ROOT
from tests.conftest import SHARED_MNIST
from tests.studies import composed as study_composed

README = PROJECT_ROOT / "README.md"
ENTRIES = ("src.train", "pipelines.study")


def readme_commands() -> list[tuple[str, list[str]]]:
    """(module, arguments) of every Python entry run in the README's bash blocks."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if len(words) > 2 and words[0].endswith("python") and words[1] == "-m" and (
                    words[2] in ENTRIES):
                commands.append((words[2], words[3:]))
    return commands


def _cases() -> list[object]:
    cases = []
    for module, args in readme_commands():
        marks = []
        if any(a.startswith("+experiment=best_") for a in args):
            marks.append(pytest.mark.skip(reason="replays a study's export (test_study_export)"))
        cases.append(pytest.param(module, args, id=" ".join([module, *args])[:90], marks=marks))
    return cases


def test_the_readme_has_commands_to_check() -> None:
    modules = [module for module, _ in readme_commands()]
    assert modules.count("src.train") >= 15 and modules.count("pipelines.study") >= 5


@pytest.mark.parametrize(("module", "args"), _cases())
def test_a_readme_command_composes_and_validates(module: str, args: list[str]) -> None:
    flags = [a for a in args if a.startswith("-")]
    overrides = [a for a in args if not a.startswith("-")]
    if "--cfg" in flags:
        overrides = [a for a in overrides if a not in ("job", "hydra", "all")]
    if module == "pipelines.study":
        config = study_composed(*overrides)
    else:
        if "-m" in flags:
            # A sweep: the first value of each swept key stands for all of them.
            overrides = [_first_value(o) for o in overrides]
        with initialize_config_dir(version_base="1.3", config_dir=str(PROJECT_ROOT / "conf")):
            config = to_config(compose("config", overrides=overrides))
    if not any(o.startswith("data.root=") for o in overrides):
        assert config.data.root == default_root(config.data.name)  # its own dataset's folder
    # Pasted here, a command finds the data without a data.root of its own.
    placeholder = any("/path/to/" in o or "/shared/mnist" in o for o in overrides)
    if config.data.name == "mnist" and _complete(SHARED_MNIST) and not placeholder:
        assert config.data.root is not None and _complete(Path(config.data.root)), (
            config.data.root)


def _complete(root: Path) -> bool:
    return len(locate_files(MNIST, root)) == len(MNIST.files)


def _first_value(override: str) -> str:
    """`k=a,b` → `k=a`, minding brackets: `k=[0.9,0.999],[0.1,0.1]` → `k=[0.9,0.999]`."""
    key, _, value = override.partition("=")
    depth = 0
    for i, char in enumerate(value):
        depth += char in "[{"
        depth -= char in "]}"
        if char == "," and depth == 0:
            return f"{key}={value[:i]}"
    return override
