"""pipelines.report.verdict: p-values as text, and who beats whom in one line."""

from __future__ import annotations

import pytest

from pipelines.report.stats import Difference, welch_test
from pipelines.report.verdict import format_p, verdict
from tests.reports import BLUE, ORANGE


@pytest.mark.parametrize(
    ("p", "text"),
    [
        (3.2e-05, "3.2e-05"),
        (0.021, "0.021"),
        (0.0, "< 1e-300"),
        (1e-320, "< 1e-300"),
        (float("nan"), "n/a"),
        (0.5, "0.500"),
    ],
)
def test_format_p(p: float, text: str) -> None:
    assert format_p(p) == text


# --------------------------------------------------------------------------- verdict


def test_verdict_significant() -> None:
    d = Difference(0.0112, 0.0095, 0.0129, 9.1, 7.9, 2.1e-06, 5, 5)
    assert verdict(d, "test/acc", BLUE, ORANGE) == (
        f"{BLUE} beats {ORANGE} on test/acc by 1.12 points "
        "(95% CI 0.95–1.29, Welch p=2.1e-06, n=5 vs 5)"
    )
    # B better on accuracy: flipped to B − A.
    flipped = Difference(-0.0112, -0.0129, -0.0095, -9.1, 7.9, 2.1e-06, 5, 5)
    assert verdict(flipped, "test/acc", BLUE, ORANGE).startswith(
        f"{ORANGE} beats {BLUE} on test/acc by 1.12 points (95% CI 0.95–1.29"
    )
    # Lower loss is better: a negative A − B means A wins.
    loss = Difference(-0.05, -0.06, -0.04, -12.0, 8.0, 1e-7, 3, 3)
    assert verdict(loss, "test/loss", BLUE, ORANGE).startswith(
        f"{BLUE} beats {ORANGE} on test/loss by 0.0500 (95% CI 0.0400–0.0600"
    )


def test_verdict_not_significant_and_not_testable() -> None:
    d = Difference(0.001, -0.002, 0.004, 0.8, 7.5, 0.42, 5, 5)
    text = verdict(d, "test/acc", BLUE, ORANGE)
    assert text.startswith(f"no significant difference between {BLUE} and {ORANGE} on test/acc")
    assert "p=0.420" in text and "-0.20 to 0.40" in text
    # Significant at 0.05 but not at the default 0.01.
    d2 = Difference(0.01, 0.001, 0.019, 2.5, 8, 0.03, 5, 5)
    assert verdict(d2, "test/acc", "A", "B").startswith("no significant")
    assert verdict(d2, "test/acc", "A", "B", alpha=0.05).startswith("A beats B")

    assert "not testable (n<2" in verdict(welch_test([0.9], [0.8, 0.85]), "test/acc", "A", "B")
    assert "not testable (zero variance" in verdict(
        welch_test([0.9, 0.9], [0.8, 0.8]), "test/acc", "A", "B"
    )
