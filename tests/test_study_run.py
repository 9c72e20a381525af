"""pipelines.study.run: an invocation runs the trials still missing, and a resume only those."""

from __future__ import annotations

from pathlib import Path

from optuna.trial import TrialState

from pipelines.study.run import run_study
from tests.studies import FINISHED, children_of, composed, load, mlflow_runs

# --- studies in-process ----------------------------------------------------------------------

def test_trials_complete_and_resume_runs_only_the_missing(tiny_study: list[str],
                                                          tmp_path: Path) -> None:
    first = run_study(composed(*tiny_study, "study.n_trials=2"))
    study = load(tmp_path)
    before = {t.number: (t.state, t.value, t.datetime_complete) for t in study.trials}
    assert [s for s, _, _ in before.values()] == [TrialState.COMPLETE] * 2
    assert [(t.params["lr"], t.user_attrs["beta1"]) for t in study.trials] == [
        (1e-3, 0.9), (1e-3, 0.1)]  # the enqueued blog settings run first

    second = run_study(composed(*tiny_study, "study.n_trials=4"))
    study = load(tmp_path)
    assert len(study.trials) == 4 and {t.number for t in study.trials} == {0, 1, 2, 3}
    assert all(t.state in FINISHED for t in study.trials)
    assert {n: before[n] for n in before} == {
        t.number: (t.state, t.value, t.datetime_complete) for t in study.trials[:2]}

    third = run_study(composed(*tiny_study, "study.n_trials=4"))  # already there: runs nothing
    assert len(load(tmp_path).trials) == 4 and third.worker_exit_codes == []

    runs = mlflow_runs(tmp_path)
    assert sorted(children_of(runs, first.parent_run_id)) == [0, 1]
    assert sorted(children_of(runs, second.parent_run_id)) == [2, 3]
    assert children_of(runs, third.parent_run_id) == {}
