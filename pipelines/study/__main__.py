"""`python -m pipelines.study [overrides]`: the study's command line (see pipelines.study.run)."""

from pipelines.study.run import main
from src.cli import hydra_entry

if __name__ == "__main__":
    hydra_entry(main)
