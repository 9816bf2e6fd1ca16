"""The study: one ``automl run`` from a RunConfig to its outcome.

``runner`` wires the rooms together (data, space, storage, launcher) and runs
``study.optimize``; ``objective`` is one trial as one training job; ``slots`` (the pool
of device slots), ``packing`` (how many trials share one) and ``sharing`` (what a trial
records about it, the out-of-memory retry alone) place jobs on devices; ``caches`` holds
what outlives a trial (compiled kernels); ``recovery``, ``trial_paths`` and ``attrs`` are
what trials and workers share;
``results`` and ``best_export`` hand back the best spec, checkpoint and model;
``nightly`` is one night that improves a champion (``warm_start``, ``holdout``,
``champion``, ``night_record``, ``night_retention``, ``run_lock``); ``cron`` and
``schedule`` run a command on a cron schedule. The study reports what happens as
:mod:`events` and returns results; it never prints (that is :mod:`automl.ui`).
"""
