"""``velora-ens tune``: hyperparameter search with Optuna (the ``tune`` extra).

* :mod:`~velora_ens.tuning.spaces`: the search spaces, one sample function per algorithm,
  and the space files that narrow or replace them;
* :mod:`~velora_ens.tuning.storage`: ``--storage`` as an Optuna storage (SQLite,
  PostgreSQL or any SQLAlchemy URL, or a journal file);
* :mod:`~velora_ens.tuning.study`: workers sharing one study, capped at exactly N trials;
* :mod:`~velora_ens.tuning.objective`: a trial: seeds trained in lock-step, evaluations
  reported to the pruner (command-line code: it builds agents);
* :mod:`~velora_ens.tuning.results`: the best config, the CSV, the plots, ``--show``;
* :mod:`~velora_ens.tuning.cli`: the subcommand.

Importing this package loads neither Optuna nor the agents.
"""
