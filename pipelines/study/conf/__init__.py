"""The study's own config group, `study/`, outside conf/: only `python -m pipelines.study` sees it.

conf/study_config.yaml adds this package to its search path (`pkg://pipelines.study.conf`),
so `python -m src.train --help` lists only the groups a training run accepts. (A package, not
a plain folder: Hydra finds a `pkg://` config folder by its `__init__.py`.)
"""
