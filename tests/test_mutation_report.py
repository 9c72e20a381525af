"""Tests of tools.mutation_report: the equivalents list read, matched to survivors and scored."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.mutation_report import (
    EQUIVALENT,
    MODULES,
    Equivalent,
    Score,
    dotted,
    function_of,
    match_equivalents,
    mutated_line,
    problems,
    read_equivalents,
    table,
)

DIFF = """\
--- src/config.py
+++ src/config.py
@@ -1,3 +1,3 @@
 def finite(x: object) -> bool:
-    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
+    return isinstance(x, int | float) or not isinstance(x, bool) and math.isfinite(x)
"""


def test_the_mutated_line_is_what_the_diff_adds() -> None:
    assert mutated_line(DIFF) == (
        "return isinstance(x, int | float) or not isinstance(x, bool) and math.isfinite(x)")
    assert mutated_line("--- a\n+++ a\n-    x = 1\n+    x = 2\n+    y = 3\n") == "x = 2 / y = 3"


def test_entries_keep_a_bar_inside_the_mutated_line(tmp_path: Path) -> None:
    listed = tmp_path / "equivalent.txt"
    listed.write_text("# a comment\n\n"
                      "src.config.x_finite__mutmut_3 | return x | y | why it changes nothing\n")
    assert read_equivalents(listed) == [
        Equivalent("src.config.x_finite__mutmut_3", "return x | y", "why it changes nothing")]


@pytest.mark.parametrize("line", ["src.config.x_f__mutmut_1 | no reason",
                                  "src.config.x_f__mutmut_1 |  | empty line",
                                  "src.config.x_f__mutmut_1 | x = 1 |  "])
def test_an_entry_without_line_or_reason_is_refused_naming_its_line(tmp_path: Path,
                                                                    line: str) -> None:
    listed = tmp_path / "equivalent.txt"
    listed.write_text(f"# header\n{line}\n")
    with pytest.raises(ValueError, match=r"^equivalent.txt:2: expected 'mutant \| mutated line"):
        read_equivalents(listed)


def test_entries_match_by_function_and_line_not_by_number() -> None:
    assert function_of("src.data.idx.x_write_idx__mutmut_12") == "src.data.idx.x_write_idx"
    listed = [Equivalent("m.x_f__mutmut_3", "a = 2", "r"),  # now number 4: still matches
              Equivalent("m.x_f__mutmut_5", "b = 0", "r"),  # killed now: stale
              Equivalent("m.x_g__mutmut_4", "a = 2", "r")]  # another function's
    survivors = {"m.x_f__mutmut_4": "a = 2", "m.x_f__mutmut_9": "c = 1"}
    matched, stale = match_equivalents(survivors, listed)
    assert matched == {"m.x_f__mutmut_4": listed[0]}
    assert stale == listed[1:]


def test_a_run_passes_only_at_the_threshold_with_every_survivor_listed() -> None:
    entry = Equivalent("src.config.x_f__mutmut_1", "a = 2", "r")
    passing = Score("config", 10, 9, {"src.config.x_f__mutmut_1": "a = 2"},
                    {"src.config.x_f__mutmut_1": entry}, [], 1.0)
    assert problems([passing]) == []
    assert "| `src/config.py` | 10 | 9 | 1 | 1 | 90.0% |" in table([passing])
    low = Score("config", 10, 8, {"src.config.x_f__mutmut_1": "a = 2",
                                  "src.config.x_f__mutmut_2": "b = 3"},
                {"src.config.x_f__mutmut_1": entry}, [entry], 1.0)
    assert problems([low]) == [
        "config: score 80.0% is below 90%",
        "config: src.config.x_f__mutmut_2 survives and is not listed as equivalent: b = 3",
        "config: src.config.x_f__mutmut_1 is listed as equivalent but no mutant of "
        "src.config.x_f survives with: a = 2",
    ]


def test_the_committed_list_parses_and_names_only_modules_under_test() -> None:
    assert dotted("src/data/idx.py") == "src.data.idx"
    prefixes = tuple(dotted(p) + "." for module in MODULES.values() for p in module.paths)
    entries = read_equivalents(EQUIVALENT)
    assert entries and all(e.name.startswith(prefixes) for e in entries)
    assert len({e.name for e in entries}) == len(entries)
