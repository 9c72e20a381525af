"""pipelines.study.storage: a resume with other settings is refused, a storage that cannot be
opened is one line."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pipelines.study.run import run_study
from src.config import ConfigError
from src.tracking import PROJECT_ROOT
from tests.studies import composed, entry, load


def test_resume_with_other_settings_is_refused_before_writing(tiny_study: list[str],
                                                              tmp_path: Path) -> None:
    run_study(composed(*tiny_study, "study.n_trials=1"))
    with pytest.raises(ConfigError, match="trainer.max_epochs=2.*3"):
        run_study(composed(*tiny_study, "study.n_trials=3", "trainer.max_epochs=3"))
    assert len(load(tmp_path).trials) == 2  # the finished one and the second enqueued


# --- the real entry, as a user runs it ------------------------------------------------------

def test_a_storage_that_cannot_be_opened_is_one_line_and_a_non_zero_exit(
        tiny_study: list[str], tmp_path: Path) -> None:
    # (Config errors take the same path, src.cli.user_errors; they are checked in-process.)
    done = subprocess.run(entry(tiny_study, "study.storage=nosuchdb://user:secret@nowhere/optuna"),
                          cwd=PROJECT_ROOT, env=dict(os.environ), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    errors = done.stderr.strip().splitlines()
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith("error: cannot open the Optuna storage nosuchdb://user:***@")
    assert "secret" not in done.stdout + done.stderr
    assert not list(tmp_path.glob("*.db"))  # neither the study's storage nor MLflow's
