"""One source for each default: the schema dataclasses. conf/ sets only what differs from them.

A value written both in a dataclass and in a YAML group file drifts: one of the two is
edited, and the other then misleads whoever reads it. So the YAML files under conf/ may set
a key only to a value other than its dataclass default, and composing a root config gives
the dataclass defaults everywhere else, which is what `--cfg job` shows and what runs.
"""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from src.config import Config, to_config
from src.tracking import PROJECT_ROOT

CONF = PROJECT_ROOT / "conf"
# The study's own group sits with its code, on the study's search path only.
STUDY_CONF = PROJECT_ROOT / "pipelines" / "study" / "conf"
CONF_DIRS = (CONF, STUDY_CONF)
# Each root config, with the module that registers its schema in Hydra's ConfigStore and the
# name of that node (the first entry of the root's defaults list).
ROOTS = {
    "config": ("src.config", "config_schema"),
    "study_config": ("pipelines.study.config", "study_schema"),
}
# Groups chosen on the command line (`+experiment=...`) rather than in a defaults list.
ADDED_GROUPS = {"experiment": "config"}

NO_KEY = object()


def root_schema(root: str) -> type:
    module, node = ROOTS[root]
    importlib.import_module(module).register()
    schema = OmegaConf.get_type(ConfigStore.instance().load(f"{node}.yaml").node)
    assert isinstance(schema, type) and dataclasses.is_dataclass(schema)
    return schema


def _dataclass_of(hint: Any) -> type | None:
    """The dataclass in a field's type (`X`, `X | None`), or None."""
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return hint
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        found = [_dataclass_of(arg) for arg in typing.get_args(hint)]
        return next((c for c in found if c is not None), None)
    return None


def schema_default(schema: type, path: tuple[str, ...]) -> Any:
    """The dataclass default at `path` below `schema`, as declared (no `__post_init__`, so a
    section that must be filled in, like `compare`, still has defaults); below a section that
    defaults to None, its own dataclass's defaults. NO_KEY: not a key of the schema."""
    section: type | None = schema
    value: Any = NO_KEY
    for key in path:
        if section is None:
            return NO_KEY
        field = {f.name: f for f in dataclasses.fields(section)}.get(key)
        if field is None:
            return NO_KEY
        if field.default is not dataclasses.MISSING:
            value = field.default
        elif field.default_factory is not dataclasses.MISSING:
            value = field.default_factory()
        else:
            return NO_KEY
        section = _dataclass_of(typing.get_type_hints(section)[key])
        if dataclasses.is_dataclass(value):
            value = dataclasses.asdict(value)
    return value


def section_name(schema: type, path: tuple[str, ...]) -> str:
    """The name of the dataclass that declares the last key of `path`."""
    section = schema
    for key in path[:-1]:
        inner = _dataclass_of(typing.get_type_hints(section)[key])
        assert inner is not None
        section = inner
    return section.__name__


def leaves(tree: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """The leaves of a config tree by key path; a list, and an empty mapping, is one leaf."""
    if not isinstance(tree, dict) or not tree:
        return {prefix: tree} if prefix else {}
    found: dict[tuple[str, ...], Any] = {}
    for key, value in tree.items():
        found.update(leaves(value, (*prefix, str(key))))
    return found


def own_keys(path: Path) -> dict[tuple[str, ...], Any]:
    """What the file at `path` sets, with its package prefix; not `defaults` or `hydra`."""
    text = path.read_text()
    tree = OmegaConf.to_container(OmegaConf.create(text)) or {}
    assert isinstance(tree, dict)
    tree = {k: v for k, v in tree.items() if k not in ("defaults", "hydra")}
    relative = path.relative_to(base_of(path))
    is_global = len(relative.parts) == 1 or "# @package _global_" in text
    prefix = () if is_global else (relative.parts[0],)
    return leaves(tree, prefix) if tree else {}


def group_choices(root: str) -> dict[str, str]:
    """The group options a root config's defaults list chooses, e.g. {"data": "mnist"}."""
    entries = OmegaConf.to_container(OmegaConf.load(CONF / f"{root}.yaml"))["defaults"]
    return {group: option for entry in entries if isinstance(entry, dict)
            for group, option in entry.items() if not group.startswith("override ")}


def base_of(path: Path) -> Path:
    """The config folder (conf/ or the study's) that holds `path`."""
    return next(base for base in CONF_DIRS if path.is_relative_to(base))


def group_file(group: str, option: str) -> Path:
    """The file of a group option, in whichever config folder has the group."""
    return next(base / group / f"{option}.yaml" for base in CONF_DIRS
                if (base / group / f"{option}.yaml").is_file())


def schema_for(path: Path) -> type:
    """The root schema a YAML file is composed onto."""
    relative = path.relative_to(base_of(path))
    if len(relative.parts) == 1:
        return root_schema(path.stem)
    group = relative.parts[0]
    root = ADDED_GROUPS.get(group) or next(r for r in ROOTS if group in group_choices(r))
    return root_schema(root)


def conf_files() -> list[Any]:
    files = sorted([*CONF.glob("*.yaml"), *CONF.glob("*/*.yaml"), *STUDY_CONF.glob("*/*.yaml")])
    params = []
    for path in files:
        name = str(path.relative_to(base_of(path)))
        params.append(pytest.param(path, id=name))
    return params


@pytest.mark.parametrize("path", conf_files())
def test_yaml_sets_no_value_to_its_dataclass_default(path: Path) -> None:
    schema = schema_for(path)
    restated = [f"{path.relative_to(PROJECT_ROOT)}: {'.'.join(key)}={value!r} is the default "
                f"of {section_name(schema, key)}; delete it (the dataclass is the one source)"
                for key, value in own_keys(path).items()
                if schema_default(schema, key) is not NO_KEY
                and schema_default(schema, key) == value]
    assert not restated, "\n".join(restated)


def test_the_default_config_is_the_dataclass_defaults() -> None:
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        composed = to_config(compose("config"))
    expected = Config()
    assert expected.data.root is None  # declared null; to_config resolves it, as runs log it
    expected.data.root = expected.data.location()
    assert composed == expected


def _composition(root: str, experiment: str | None) -> tuple[list[Path], list[str]]:
    """The files a composition reads (root, chosen group options, experiment) and overrides."""
    files = [CONF / f"{root}.yaml"]
    files += [group_file(group, option) for group, option in group_choices(root).items()]
    if experiment is None:
        return files, []
    chain, name = [], experiment
    while name is not None:  # an experiment may extend another (compare_three: compare)
        path = CONF / "experiment" / f"{name}.yaml"
        chain.append(path)
        parents = OmegaConf.to_container(OmegaConf.load(path)).get("defaults", [])
        # `- override /model: logreg` swaps a group option the root chose (paper_logreg)
        chain += [CONF / group.removeprefix("override /") / f"{option}.yaml"
                  for entry in parents if isinstance(entry, dict)
                  for group, option in entry.items() if group.startswith("override /")]
        name = next((p for p in parents if isinstance(p, str) and p != "_self_"), None)
    return files + chain, [f"+experiment={experiment}"]


def compositions() -> list[Any]:
    params = [pytest.param(root, None, id=root) for root in ROOTS]
    for path in sorted((CONF / "experiment").glob("*.yaml")):
        params.append(pytest.param("config", path.stem, id=f"+experiment={path.stem}"))
    return params


@pytest.mark.parametrize(("root", "experiment"), compositions())
def test_what_runs_is_the_dataclass_default_unless_a_file_sets_it(
        root: str, experiment: str | None) -> None:
    schema = root_schema(root)
    files, overrides = _composition(root, experiment)
    explicit = [key for path in files for key in own_keys(path)]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        composed = leaves(OmegaConf.to_container(compose(root, overrides=overrides),
                                                resolve=True))
    differs = [f"{'.'.join(key)}={value!r} (default {schema_default(schema, key)!r})"
               for key, value in composed.items()
               if not any(key[:len(e)] == e for e in explicit)
               and schema_default(schema, key) != value]
    assert not differs, f"{root} {overrides}: set by no file in {files}: {differs}"
