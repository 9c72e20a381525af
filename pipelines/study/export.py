"""What a study leaves behind: its report on the parent run, and the best trial as an experiment.

The parent run gets the counts, the best value and parameters, the importances, the plots
and the trial table (under `study/`); the best trial (the confirmed winner, when the study
was confirmed: pipelines.study.confirm) becomes a Hydra experiment,
`mlruns/conf/experiment/best_<name>.yaml`, that `python -m src.train +experiment=best_<name>`
replays (Hydra searches `mlruns/conf` too: hydra_plugins/adam_study/searchpath.py), while the
tracked `conf/` stays as checked out.
"""

from __future__ import annotations

import json
import textwrap
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import optuna
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from optuna.trial import FrozenTrial

from hydra_plugins.adam_study.searchpath import GENERATED_CONF
from pipelines.runs import log_report
from pipelines.study.config import (
    StudyConfig,
    StudyRunConfig,
    from_optuna_params,
    point_overrides,
)
from pipelines.study.confirm import Confirmation
from pipelines.study.storage import counts
from src.files import atomic_write
from src.tracking import PROJECT_ROOT, log_params

DEFAULT_EXPORT_DIR = GENERATED_CONF / "experiment"


def _figures(study: optuna.Study, out: Path) -> list[str]:
    """The parent run's plots as PNG; a plot that the trials so far cannot support is skipped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    betas = ["1-beta1", "1-beta2"]
    wanted = {
        "optimization_history.png": lambda: plots.plot_optimization_history(study),
        "param_importances.png": lambda: plots.plot_param_importances(study),
        "contour_beta1_beta2.png": lambda: plots.plot_contour(study, params=betas),
        "slice.png": lambda: plots.plot_slice(study),
    }
    skipped = []
    for name, draw in wanted.items():
        # Optuna's plots switch matplotlib's global style to ggplot: kept to this block, so
        # that the reports drawn after them (a confirmation's) keep matplotlib's defaults.
        with matplotlib.rc_context():
            try:
                # Optuna warns (and logs) about thin data, e.g. a parameter with one value.
                with warnings.catch_warnings(), _optuna_verbosity(optuna.logging.ERROR):
                    warnings.simplefilter("ignore")
                    axes = draw()
            except (ValueError, RuntimeError, ZeroDivisionError) as err:
                skipped.append(f"{name} ({err})")
                continue
            figure = np.asarray(axes).flat[0].figure
            figure.set_size_inches(max(figure.get_size_inches()[0], 8), 6)
            figure.savefig(out / name, dpi=120, bbox_inches="tight")
            plt.close(figure)
    return skipped


@contextmanager
def _optuna_verbosity(level: int) -> Iterator[None]:
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(level)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(previous)


def _importances(study: optuna.Study) -> dict[str, float]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError, ZeroDivisionError):
        return {}  # too few complete trials to tell
    return {k: float(v) for k, v in found.items()}

def log_study_report(study: optuna.Study, client: MlflowClient, parent_run_id: str,
                     config: StudyRunConfig) -> tuple[FrozenTrial | None, dict[str, float]]:
    """Best value and params, counts, plots, importances and the trial table → parent run."""
    s = config.study
    tally = counts(study)
    metrics = {f"trials/{state.name.lower()}": float(n) for state, n in tally.items() if n}
    try:
        best: FrozenTrial | None = study.best_trial
    except ValueError:  # no complete trial yet
        best = None
    importances = _importances(study)
    if best is not None and best.value is not None:
        metrics[f"best/{s.metric}"] = best.value
        natural = from_optuna_params(best.params)
        log_params(client, parent_run_id, {"best.trial": str(best.number),
                                           **{f"best.{k}": repr(v) for k, v in natural.items()}})
    metrics.update({f"importance/{k}": v for k, v in importances.items()})

    def write(folder: Path) -> tuple[dict[str, float], list[str]]:
        skipped = _figures(study, folder) if best is not None else [
            "all plots (no complete trial)"]
        (folder / "importances.json").write_text(json.dumps(importances, indent=2) + "\n")
        study.trials_dataframe().to_csv(folder / "trials.csv", index=False)
        return metrics, skipped

    skipped, _ = log_report(client, parent_run_id, write, artifact_path="study")
    for item in skipped:
        print(f"note: plot skipped: {item}", flush=True)
    return best, importances


def export_dir(study: StudyConfig) -> Path:
    if study.export_dir is None:
        return DEFAULT_EXPORT_DIR
    path = Path(study.export_dir).expanduser()
    return path if path.is_absolute() else PROJECT_ROOT / path


def export_best(best: FrozenTrial, config: StudyRunConfig,
                confirmed: Confirmation | None = None) -> Path:
    """Write the best trial as a Hydra experiment (`+experiment=best_<name>`), atomically:
    the confirmation's winner when there is one (which may be the baseline), and the header
    says which it is."""
    s = config.study
    natural = from_optuna_params(best.params)
    if confirmed is not None and confirmed.winner is not None:
        natural = confirmed.winner_params
    optimizer = asdict(config.optimizer) | point_overrides(natural, config.optimizer)
    data = {k: getattr(config.data, k) for k in ("name", "val_size", "batch_size", "limit_train")}
    settings = {"optimizer": optimizer, "model": asdict(config.model), "data": data,
                "trainer": {"max_epochs": config.trainer.max_epochs,
                            "deterministic": config.trainer.deterministic},
                "seed": config.seed}
    header = (f"# @package _global_\n{_provenance(best, config, confirmed)}"
              f"#   python -m src.train +experiment=best_{s.name} data.root=...\n")
    target = export_dir(s) / f"best_{s.name}.yaml"
    text = header + OmegaConf.to_yaml(OmegaConf.create(settings))
    atomic_write(target, lambda fh: fh.write(text))
    return target


def _provenance(best: FrozenTrial, config: StudyRunConfig,
                confirmed: Confirmation | None) -> str:
    """The export's header comment: which trial (or the baseline) it is, and on what evidence."""
    s = config.study
    search = (f"trial {best.number}, {s.metric}={best.value:.6g} with seed {config.seed} "
              "(written by pipelines.study)")
    if confirmed is None or confirmed.winner is None:
        why = ("confirmation off" if not s.confirm.enabled else
               "no confirmation finished a run" if confirmed is not None else "not confirmed")
        return f"# Best trial of Optuna study '{s.name}' ({why}): {search}.\n"
    chosen = (f"trial {confirmed.winner_trial}" if confirmed.winner_trial is not None
              else "the baseline, study.confirm.baseline (no trial beat it on validation)")
    text = (f"Confirmed winner of Optuna study '{s.name}': {chosen}. It has the best mean "
            f"{s.metric} over seeds {confirmed.seeds} among the search's best trials "
            f"{confirmed.trials} and the baseline (MLflow run {confirmed.run_id}). The "
            f"search's best: {search}.")
    return "".join(f"# {line}\n" for paragraph in (text, f"Verdict: {confirmed.verdict}")
                   for line in textwrap.wrap(paragraph, 94))


def replay_command(path: Path, config: StudyRunConfig) -> str:
    name = path.stem
    where = "" if path.parent == DEFAULT_EXPORT_DIR else (
        f" hydra.searchpath=[file://{path.parent.parent}]" if path.parent.name == "experiment"
        else f"  # copy {path} into conf/experiment/ first")
    return f"python -m src.train +experiment={name} data.root={config.data.root}{where}"


__all__ = ["DEFAULT_EXPORT_DIR", "export_best", "export_dir", "log_study_report",
           "replay_command"]
