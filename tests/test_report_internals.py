"""pipelines.report.internals: the internals figure, Markdown and CSV of a comparison."""

from __future__ import annotations

from pathlib import Path


def test_compare_report_gets_the_internals_figure(tmp_path: Path) -> None:
    from pipelines.report.internals import write_internals
    from pipelines.report.results import RunResult

    def run(arm: str, seed: int, scale: float) -> RunResult:
        history = {"internals/epoch": [1.0, 2.0]}
        for name in ("step", "inv_sqrt_v", "update_ratio"):
            for i, q in enumerate(("p10", "p50", "p90")):
                history[f"internals/{name}_{q}"] = [scale * 10**i, scale * 10**i / 2]
        history["internals/update_norm_ratio"] = [scale, scale]
        history["internals/frozen_frac"] = [0.1, 0.1]
        return RunResult(arm, seed, history=history)

    results = [run("a", 0, 1e-3), run("a", 1, 3e-3), run("b", 0, 1e-4)]
    assert write_internals([RunResult("a", 0)], ["a"], tmp_path / "none") is None
    figure = write_internals(results, ["a", "b"], tmp_path, labels={"a": "β=(0.9, 0.999)"})
    assert figure == tmp_path / "internals.png" and figure.read_bytes()[:4] == b"\x89PNG"
    table = (tmp_path / "internals.md").read_text()
    assert "| β=(0.9, 0.999) | 2 | 2 | 1.00e-03 / **1.00e-02** / 1.00e-01 |" in table
    assert (tmp_path / "internals.csv").read_text().startswith("arm,label,n,epoch,")
