"""Where Hydra finds the configs this project generates: `mlruns/conf/`, git-ignored.

A study writes its best trial as `mlruns/conf/experiment/best_<name>.yaml`; this plugin puts
`mlruns/conf` on the search path of every composition from the project's `conf/`, so that
`python -m src.train +experiment=best_<name>` replays it while the tracked config tree (and
`git status`) stays as it was checked out.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROJECT_CONF = PROJECT_ROOT / "conf"
# Beside the local MLflow store (src.tracking.STORE_DIR), ignored by git with it.
GENERATED_CONF = PROJECT_ROOT / "mlruns" / "conf"


def _is_project_conf(path: str) -> bool:
    # `@hydra.main` gives file://<dir>, the compose API (initialize_config_dir) the bare <dir>.
    if "://" in path and not path.startswith("file://"):
        return False
    return Path(path.removeprefix("file://")).resolve() == PROJECT_CONF


class GeneratedConfigs(SearchPathPlugin):
    """Appends `mlruns/conf` after the project's `conf/` (a tracked file wins a name clash)."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        # Only once a study has written there: Hydra warns about a missing search path on
        # every command otherwise (a fresh clone has no mlruns/conf).
        if not GENERATED_CONF.is_dir():
            return
        if any(_is_project_conf(element.path) for element in search_path.get_path()):
            search_path.append(provider="adam-study-generated", path=f"file://{GENERATED_CONF}")
