"""An Optuna study over Adam's α, β1 and β2: `python -m pipelines.study [overrides]`.

Every trial is one `src.run.train` call: a nested MLflow child run with per-epoch metrics,
reported to the trial after each validation so that the pruner can stop it.

    config     the typed `study:` section (conf/study_config.yaml) and its Optuna objects
    storage    the Optuna storage, the study in it, and how many trials it holds
    trial      one trial: the objective and the pruning callback
    workers    the processes that pull trials until the study is full, and the clean-up
    export     the report on the parent run, and the best trial as a Hydra experiment
    run        one invocation, start to end (`run_study`, the Hydra `main`)
"""
