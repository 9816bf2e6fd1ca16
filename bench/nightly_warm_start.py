"""Does warm-starting a night help, and does seeding the sampler (``add_trial``) add to
enqueuing the previous top-k? Measured on the CPU with the real warm-start code
(:func:`automl.study.warm_start.warm_start`) and the curated DINO space, on a synthetic
objective standing in for a trial's mAP50: smooth in the log learning rates, weaker in the
other seven parameters, noisy (sd 0.02, like epoch-to-epoch mAP), and drifting a little
every night (the optimal lr moves by 12 % a night: new data).

    .venv/bin/python bench/nightly_warm_start.py [--reps 30] [--nights 6] [--trials 10 20]

Prints, per budget and condition, the true (noise-free) score of each night's best trial
(chosen by its noisy value, as a study does), averaged over repetitions. Results:
bench/nightly_warm_start.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import time
import warnings

import numpy as np
import optuna

from automl.search_space import SearchSpace, TrainSchema, default_schema_path, default_space_path, load_space_overrides
from automl.study import attrs
from automl.study.warm_start import warm_start

CONDITIONS = {  # name: (top_k, seed_sampler)
    "cold": (0, False),
    "enqueue top-3": (3, False),
    "seed only": (0, True),
    "enqueue top-1 + seed": (1, True),
    "enqueue top-3 + seed": (3, True),
}


def true_score(p: dict, night: int) -> float:
    """A stand-in for held-out mAP50 in [0, 1] of one parameter set on ``night``'s data."""
    lr_opt = 2e-4 * 10 ** (0.05 * night)
    q = math.exp(-(math.log10(p["train.optim.lr"] / lr_opt)) ** 2 / 0.15)
    q *= math.exp(-(math.log10(p["train.optim.lr_backbone"] / (p["train.optim.lr"] / 4))) ** 2 / 0.8)
    q *= math.exp(-(math.log10(p["train.optim.weight_decay"] / 1e-4)) ** 2 / 4)
    q *= math.exp(-(math.log10(p["train.optim.lr_linear_proj_mult"] / 0.1)) ** 2 / 2)
    q *= 1 - 0.1 * abs(math.log(p["model.num_queries"] / 300, 3))
    q *= 1 - 0.1 * abs(p["model.dn_number"] - 100) / 100
    q *= 1 - 0.2 * (p["model.dn_box_noise_scale"] - 0.4) ** 2
    q *= 0.95 + 0.1 * p["dataset.augmentation.horizontal_flip_prob"]
    return q


def one_run(space: SearchSpace, top: int, seed_sampler: bool, rep: int, nights: int, n_trials: int) -> list[float]:
    storage = optuna.storages.InMemoryStorage()
    rng = np.random.default_rng(rep)
    out = []
    for night in range(nights):
        date = dt.date(2026, 11, 1) + dt.timedelta(days=night)
        study = optuna.create_study(study_name=f"bench-{date:%Y%m%d}", storage=storage, direction="maximize",
                                    sampler=optuna.samplers.TPESampler(seed=rep * 1000 + night, n_startup_trials=4))
        if top or seed_sampler:
            warm_start(study, space, "bench", date, top=top, nights=7, seed_sampler=seed_sampler, maximize=True)

        def objective(trial: optuna.Trial, night: int = night) -> float:
            values = space.suggest(trial)
            return true_score(values, night) + float(rng.normal(0, 0.02))

        study.optimize(objective, n_trials=n_trials)
        own = [t for t in study.trials if attrs.SEEDED_FROM not in t.user_attrs]
        best = max(own, key=lambda t: t.value)
        out.append(true_score(space.decode(best.params), night))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--nights", type=int, default=6)
    parser.add_argument("--trials", type=int, nargs="+", default=[10, 20])
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore")
    space = SearchSpace.build(TrainSchema.load(default_schema_path()),
                              overrides=load_space_overrides(default_space_path()),
                              context={"dataset.num_classes": 5, "train.num_epochs": 12})
    for n_trials in args.trials:
        print(f"\n{n_trials} trials a night, {args.reps} repetitions: true score of the night's best, per night")
        print(f"{'condition':24s} " + " ".join(f"night {i + 1:<2d}" for i in range(args.nights))
              + "  nights 2.. mean ± s.e.")
        for name, (top, seed) in CONDITIONS.items():
            t = time.perf_counter()
            res = np.array([one_run(space, top, seed, rep, args.nights, n_trials) for rep in range(args.reps)])
            later = res[:, 1:].mean(axis=1)
            print(f"{name:24s} " + " ".join(f"{m:8.3f}" for m in res.mean(axis=0))
                  + f"  {later.mean():.3f} ± {later.std(ddof=1) / math.sqrt(len(later)):.3f}"
                  + f"   ({time.perf_counter() - t:.0f} s)")


if __name__ == "__main__":
    main()
