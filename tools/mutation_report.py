"""`python -m tools.mutation_report [MODULE ...]`: mutation testing of the core, scored per module.

`make mutate` runs this. For each module of `MODULES` it runs mutmut with only that module
mutated and only the module's own test files selected (narrow on purpose: a mutant counts as
killed only when the module's unit tests notice it, not when some end-to-end run happens to),
then prints one table: mutants, killed, survived, how many survivors are listed in
`tests/mutants_equivalent.txt` as equivalent, and the score, killed / mutants.

Every survivor must be killed by a test or listed as equivalent with a reason. The exit status
is 1 when a module scores below `THRESHOLD`, a survivor is unexplained, or a listed mutant no
longer survives (the list must not go stale); 2 for a bad module name.

Each module runs in its own folder, mutants/<module>/ (git-ignored): mutmut reads its settings
from ./pyproject.toml and builds ./mutants, so that folder holds a pyproject.toml with the
project's `[tool.mutmut]` settings plus the module's selection, links to the sources, and the
mutated copy. Every run starts from a clean folder, so the scores never come from a stale cache.

mutmut takes a top-level `src/` for a source folder, never a package, and drops `src.` from
mutant names (boxed/mutmut#373); here `src` is the package, so mutmut runs through
`mutmut_cli`, which keeps the prefix (see there).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EQUIVALENT = REPO / "tests" / "mutants_equivalent.txt"
THRESHOLD = 0.90
# mutmut's statuses that mean a test noticed the mutant (a timeout: the mutant looped).
KILLED = {"killed", "timeout"}


@dataclass(frozen=True)
class Module:
    """A module under mutation: the files mutated and the test files that must kill them."""

    paths: tuple[str, ...]
    tests: tuple[str, ...]


# fused=True (Adam's call of torch's kernel, through base.py, flat.py and torch_private.py):
# its tests live with Adam's.
FUSED_TESTS = (
    "tests/test_optim_adam.py::test_fused_is_torchs_fused_adam_bit_for_bit",
    "tests/test_optim_adam.py::test_fused_adamw_is_torchs_fused_adamw_bit_for_bit",
    "tests/test_optim_adam.py::test_fused_is_never_compiled",
    "tests/test_optim_adam.py::test_fused_runs_the_rule_where_torch_has_no_kernel_for_the_update",
)

# Tests are files or single tests (file::name): a rule's tests that live with another module
# (the grid's bad values in test_grid.py) are named rather than copied.
MODULES: dict[str, Module] = {
    "optim.adam": Module(("src/optim/adam.py",), ("tests/test_optim_adam.py",)),
    "optim.adamax": Module(("src/optim/adamax.py",), ("tests/test_optim_adamax.py",)),
    "optim.base": Module(("src/optim/base.py",), (
        "tests/test_optim_base.py",
        # zero_grad's profiler range and the step counter's dtype, seen through base.py.
        "tests/test_optim_torch_private.py",
        # The per-tensor path's complex parameters and sparse gradients, with the rule's tests.
        "tests/test_optim_adam.py::test_parity_with_torch_float32_and_complex",
        "tests/test_optim_adam.py::test_sparse_gradients_are_rejected",
        "tests/test_optim_adamax.py::test_sparse_gradients_are_rejected_with_torchs_message",
        "tests/test_optim_adam.py::test_loading_fused_torch_state_moves_step_to_cpu_float32",
        *FUSED_TESTS,
    )),
    "optim.flat": Module(("src/optim/flat.py",), (
        "tests/test_optim_flat.py",
        # The bucket's step counter under a 16-bit default dtype, with base.py's own.
        "tests/test_optim_base.py::"
        "test_the_step_counter_is_float32_under_a_16_bit_default_dtype_as_in_torch",
        *FUSED_TESTS,
    )),
    "optim.registry": Module(("src/optim/registry.py",), (
        "tests/test_optim_registry.py",
        # build() attaches the schedule: the schedule's test builds through it.
        "tests/test_optim_schedule.py::test_inv_sqrt_gives_alpha_over_sqrt_t_at_known_steps",
    )),
    "optim.torch_private": Module(("src/optim/torch_private.py",),
                                  ("tests/test_optim_torch_private.py", *FUSED_TESTS)),
    "stats": Module(("pipelines/report/stats.py",), ("tests/test_stats.py",)),
    "config": Module(("src/config.py",), (
        "tests/test_config.py",
        "tests/test_grid.py::test_bad_grid_values_name_the_key",
        # The step-size grid's rules (TuneConfig) and the torch optimizers' option sections.
        "tests/test_tuned.py::test_bad_grids_name_the_key",
        "tests/test_tuned.py::test_a_grid_must_tune_known_arms_on_seeds_the_comparison_does_not_use",
        # In-process tests only: mutmut's mutants do not reach a subprocess.
        "tests/test_optim_registry.py::test_build_makes_the_named_optimizer_with_the_sections_values",
        "tests/test_optim_registry.py::test_every_field_a_spec_names_is_a_keyword_of_its_class",
        "tests/test_optim_registry.py::test_groups_select_the_optimizer",
        "tests/test_optim_registry.py::test_a_wrong_name_or_a_foreign_option_fails_at_config_time",
        "tests/test_optim_registry.py::test_compare_arms_pick_an_optimizer_by_name",
        "tests/test_optim_registry.py::test_each_torch_optimizer_is_built_with_the_configured_values",
        "tests/test_optim_registry.py::test_the_group_files_and_sections_hold_torchs_defaults",
        "tests/test_optim_registry.py::test_bad_torch_optimizer_values_name_the_key",
        "tests/test_optim_registry.py::test_compare_arms_and_labels_take_torch_optimizers",
    )),
    "study_config": Module(("pipelines/study/config.py",), ("tests/test_study_config.py",)),
    # The corrupt-file table of test_arrays.py feeds the parser through its one caller.
    "idx": Module(("src/data/idx.py",), ("tests/test_idx.py", "tests/test_arrays.py")),
    "arrays": Module(("src/data/arrays.py",), (
        "tests/test_arrays.py",
        "tests/test_sources.py::test_locate_files_accepts_uncompressed_names",
        "tests/test_sources.py::test_load_arrays_downloads_only_missing_files",
    )),
}


@dataclass(frozen=True)
class Equivalent:
    """One line of the equivalents file: `mutant | mutated line | reason`."""

    name: str
    line: str
    reason: str

    @property
    def function(self) -> str:
        return function_of(self.name)


def function_of(mutant: str) -> str:
    """`pkg.mod.x_f__mutmut_12` -> `pkg.mod.x_f`: mutants are numbered within their function."""
    return re.sub(r"__mutmut_\d+$", "", mutant)


def read_equivalents(path: Path = EQUIVALENT) -> list[Equivalent]:
    """The listed equivalent mutants; `#` starts a comment line. Raises ValueError on a bad line.

    The mutated line is split off at the first and the last ` | `, so it may itself hold `|`
    (`int | float`), the name and the reason may not.
    """
    entries = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        name, sep, rest = text.partition(" | ")
        line, sep2, reason = rest.rpartition(" | ")
        if not (sep and sep2 and name and line.strip() and reason.strip()):
            raise ValueError(f"{path.name}:{number}: expected 'mutant | mutated line | reason'")
        entries.append(Equivalent(name.strip(), line.strip(), reason.strip()))
    return entries


def mutated_line(diff: str) -> str:
    """The added lines of `mutmut show`'s diff, stripped and joined: what the mutant wrote."""
    added = [line[1:].strip() for line in diff.splitlines()
             if line.startswith("+") and not line.startswith("+++")]
    return " / ".join(added)


def match_equivalents(survivors: dict[str, str], listed: list[Equivalent]
                      ) -> tuple[dict[str, Equivalent], list[Equivalent]]:
    """Pair each surviving mutant (name -> mutated line) with its listed entry, if any.

    A listed entry matches a survivor of the same function whose mutated line is the same:
    mutmut numbers mutants by position within the function, so an edit elsewhere in it
    renumbers them, while function and mutated line still say which mutant is meant.
    Returns the matches and the listed entries of these functions that matched no survivor.
    """
    matched: dict[str, Equivalent] = {}
    free = list(listed)
    for name, line in survivors.items():
        for entry in free:
            if entry.function == function_of(name) and entry.line == line:
                matched[name] = entry
                free.remove(entry)
                break
    return matched, free


@dataclass
class Score:
    module: str
    mutants: int
    killed: int
    survivors: dict[str, str]  # name -> mutated line
    equivalent: dict[str, Equivalent]
    stale: list[Equivalent]
    seconds: float

    @property
    def unexplained(self) -> list[str]:
        return [name for name in self.survivors if name not in self.equivalent]

    @property
    def score(self) -> float:
        return self.killed / self.mutants if self.mutants else float("nan")


class _PackageName(str):
    """A module name of the `src` package, which mutmut's src-layout guard lets through."""

    def startswith(self, prefix, *args) -> bool:  # type: ignore[override]
        return prefix != "src." and str.startswith(self, prefix, *args)


def mutmut_cli(args: list[str]) -> None:
    """mutmut's command line, with `src` taken for the package it is here (boxed/mutmut#373).

    mutmut names a mutant after its file with a leading `src.` dropped, and asserts that no
    function it records while collecting which tests call what lives in a module `src.*`:
    both assume `src/` only holds packages. Here the tests import `src.config`, so names keep
    the prefix (mutant names then match the modules the trampolines see) and the guard is
    passed. Checked against mutmut 3.8 (pyproject.toml pins the 3.8 series). `show` takes
    several names here (one process instead of one per survivor).
    """
    import mutmut.__main__ as main
    from mutmut.mutation import trampoline
    from mutmut.utils import format_utils

    strip = format_utils.strip_prefix
    record = trampoline.record_trampoline_hit

    def strip_but_src(s: str, *, prefix: str, strict: bool = False) -> str:
        return s if prefix == "src." else strip(s, prefix=prefix, strict=strict)

    def record_hit(name: str, caller: str | None = None) -> None:
        record(_PackageName(name), caller=caller)

    format_utils.strip_prefix = strip_but_src  # get_mutant_name reads it from its module
    trampoline.record_trampoline_hit = record_hit  # the trampolines call it from theirs
    if args[:1] == ["show"]:
        for name in args[1:]:
            main.show.callback(name)
        return
    sys.argv = ["mutmut", *args]
    main.cli()


def _mutmut(*args: str) -> list[str]:
    """The command running mutmut `args` through `mutmut_cli` (cwd: a module's folder)."""
    try:
        import mutmut  # noqa: F401
    except ImportError:
        raise SystemExit("error: mutmut is not installed: pip install -e '.[mutate]' "
                         "(or run `make mutate`)") from None
    return [sys.executable, "-m", "tools.mutation_report", "--mutmut", *args]


def _workdir(name: str, module: Module) -> Path:
    """A clean mutants/<name>/: the project's sources linked, pyproject.toml with the selection."""
    pyproject = REPO / "pyproject.toml"
    settings = tomllib.loads(pyproject.read_text())["tool"]["mutmut"]
    clash = {"only_mutate", "pytest_add_cli_args_test_selection"} & set(settings)
    if clash:
        raise SystemExit(f"error: pyproject.toml [tool.mutmut] sets {sorted(clash)}: "
                         "the module table in tests/mutation_report.py chooses those")
    work = REPO / "mutants" / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    # tools/: what `python -m tools.mutation_report --mutmut` imports from the folder.
    for linked in [*settings["source_paths"], *settings.get("also_copy", []), "tests", "tools"]:
        (work / linked).symlink_to(REPO / linked)
    selection = (f"only_mutate = {json.dumps(list(module.paths))}\n"
                 f"pytest_add_cli_args_test_selection = {json.dumps(list(module.tests))}\n")
    text = pyproject.read_text().replace("[tool.mutmut]\n", "[tool.mutmut]\n" + selection, 1)
    (work / "pyproject.toml").write_text(text)
    return work


def run_module(name: str, module: Module, listed: list[Equivalent], max_children: int) -> Score:
    """Run mutmut on one module in mutants/<name>/ and score it; its log is mutants/<name>.log."""
    work = _workdir(name, module)
    log = REPO / "mutants" / f"{name}.log"
    started = time.perf_counter()
    with open(log, "w") as out:  # mutmut draws a spinner: keep it out of the terminal
        done = subprocess.run(_mutmut("run", "--max-children", str(max_children)), cwd=work,
                              stdout=out, stderr=subprocess.STDOUT, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise SystemExit(f"error: mutmut failed on {name} (exit {done.returncode}), "
                         f"see {log}:\n{tail}")
    listing = subprocess.run(_mutmut("results", "--all", "true"), cwd=work, check=True,
                             capture_output=True, text=True).stdout
    status = dict(line.strip().rsplit(": ", 1) for line in listing.splitlines() if ": " in line)
    survivors = _diffs(work, [m for m, state in status.items() if state not in KILLED])
    prefixes = {dotted(path) for path in module.paths}
    own = [e for e in listed if any(e.name.startswith(p + ".") for p in prefixes)]
    matched, stale = match_equivalents(survivors, own)
    killed = sum(state in KILLED for state in status.values())
    return Score(name, len(status), killed, survivors, matched, stale, seconds)


def _diffs(work: Path, mutants: list[str]) -> dict[str, str]:
    """mutant -> its mutated line, from one `mutmut show` of them all (a diff opens `# name:`)."""
    if not mutants:
        return {}
    shown = subprocess.run(_mutmut("show", *mutants), cwd=work, check=True, capture_output=True,
                           text=True).stdout
    parts = re.split(r"^# (\S+): .*$", shown, flags=re.MULTILINE)
    diffs = dict(zip(parts[1::2], parts[2::2], strict=True))
    return {name: mutated_line(diffs[name]) for name in mutants}


def dotted(path: str) -> str:
    """`src/data/idx.py` -> `src.data.idx`, the prefix of that file's mutant names."""
    return path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


def table(scores: list[Score]) -> str:
    """The Markdown table the README quotes."""
    lines = ["| module | mutants | killed | survived | equivalent (listed) | score |",
             "|---|---:|---:|---:|---:|---:|"]
    for s in scores:
        paths = ", ".join(f"`{p}`" for p in MODULES[s.module].paths)
        lines.append(f"| {paths} | {s.mutants} | {s.killed} | {len(s.survivors)} | "
                     f"{len(s.equivalent)} | {s.score:.1%} |")
    return "\n".join(lines)


def problems(scores: list[Score]) -> list[str]:
    """What keeps the run from passing, one line each."""
    found = []
    for s in scores:
        if not s.score >= THRESHOLD:
            found.append(f"{s.module}: score {s.score:.1%} is below {THRESHOLD:.0%}")
        for name in s.unexplained:
            found.append(f"{s.module}: {name} survives and is not listed as equivalent: "
                         f"{s.survivors[name]}")
        for entry in s.stale:
            found.append(f"{s.module}: {entry.name} is listed as equivalent but no mutant of "
                         f"{entry.function} survives with: {entry.line}")
    return found


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--mutmut"]:  # how _mutmut runs mutmut itself
        mutmut_cli(argv[1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", metavar="MODULE",
                        help=f"some of {', '.join(MODULES)} (default: all)")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2,
                        help="mutants tested in parallel (default: one per CPU core)")
    args = parser.parse_args(argv)
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        print(f"error: unknown module {', '.join(unknown)}: expected some of "
              f"{', '.join(MODULES)}", file=sys.stderr)
        return 2
    try:
        listed = read_equivalents()
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    scores = []
    for name in args.modules or list(MODULES):
        scores.append(run_module(name, MODULES[name], listed, args.max_children))
        s = scores[-1]
        print(f"{name}: {s.killed}/{s.mutants} killed in {s.seconds:.0f} s", file=sys.stderr)
    print(table(scores))
    found = problems(scores)
    for line in found:
        print(line, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
