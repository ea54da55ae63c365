"""Choose MFConfig's defaults on validation data carved out of the TRAINING parts only.

Protocol: for each benchmark split (ml-100k fold u1, ml-latest-small random 80/20 seed 42) the
training part is split again at random (`split_validation`, 10%, seed 0) into "fit" and "valid";
the test parts are never read. Every candidate configuration is fitted on each "fit" part and
scored by its RMSE on the matching "valid" part; the objective is the mean of the two (one set of
defaults for all datasets). The search is a seeded random search over the space below, followed
by a coordinate refinement of the best candidate (one hyper-parameter at a time over its grid,
kept when the objective improves). Candidates whose step count (epochs x ceil(n / batch_size))
exceeds `--max-steps` are skipped so the chosen model stays within the fit-time budget.

    RECENGINE_DATA_DIR=/work/shared/datasets python benchmarks/tune_mf.py [--trials 30] [--threads 1]
        [--datasets ml-100k,ml-latest-small] [--seed 0] [--base '{"embedding_dim": 128}']

Prints every trial (its hyper-parameters, per-dataset validation RMSE, objective) and finally the
chosen configuration as `MFConfig(...)` keyword arguments. `--threads` sets torch's intra-op
threads for this process only (1 is the most robust on a busy machine; results do not depend on it
beyond float rounding).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recengine.data.dataset import Dataset  # noqa: E402
from recengine.models.mf import MatrixFactorization, MFConfig  # noqa: E402

#: The grid each hyper-parameter is drawn from (random search) and walked over (refinement).
SPACE: dict[str, tuple[Any, ...]] = {
    "embedding_dim": (32, 64, 128, 256),
    "epochs": (10, 15, 20),
    "batch_size": (1024, 2048),
    "learning_rate": (0.005, 0.01, 0.02, 0.03),
    "reg_factors": (0.08, 0.1, 0.12, 0.15, 0.2),
    "reg_uniform": (0.0, 0.02, 0.05),
    "reg_bias": (0.0, 0.01, 0.05),
    "range_margin": (0.5, 0.75, 1.0, 1.25),
    "init_std": (0.01, 0.05),
    "schedule": ("one_cycle", "cosine"),
    "adam_beta2": (0.99, 0.999),
}
SPLITS = {"ml-100k": "u1", "ml-latest-small": "random"}


def validation_parts(dataset_names: Sequence[str]) -> dict[str, tuple[Dataset, Dataset]]:
    """{dataset: (fit, valid)} carved from each benchmark split's training part."""
    from recengine.data.movielens import load_dataset
    from recengine.data.splits import make_split, split_validation

    parts = {}
    for name in dataset_names:
        train = make_split(load_dataset(name), SPLITS[name], seed=42).train
        inner = split_validation(train, fraction=0.1, seed=0)
        parts[name] = (inner.train, inner.test)
    return parts


def steps(config: MFConfig, n: int) -> int:
    from recengine.models.mf import automatic_batch_size

    return config.epochs * math.ceil(n / (config.batch_size or automatic_batch_size(n)))


def score(config: MFConfig, parts: dict[str, tuple[Dataset, Dataset]]) -> tuple[float, dict[str, float], float]:
    """(objective, {dataset: valid RMSE}, seconds) for one configuration."""
    figures, started = {}, time.perf_counter()
    for name, (fit, valid) in parts.items():
        model = MatrixFactorization(config, device="cpu").fit(fit)
        predicted = model.predict(valid.users, valid.items).astype(np.float64)
        figures[name] = float(np.sqrt(np.mean((predicted - valid.ratings) ** 2)))
    return float(np.mean(list(figures.values()))), figures, time.perf_counter() - started


FOLD_IN_REGS = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)


def fold_in_rmse(model: MatrixFactorization, fit: Dataset, valid: Dataset, revealed: int, seed: int = 0) -> float:
    """RMSE on `valid` of users folded in from `revealed` random ratings of theirs in `fit` (all
    when they have fewer), as a newcomer would be: the trained user vectors are not used."""
    rng = np.random.default_rng(seed)
    indptr, items, ratings = fit.user_item_csr()
    predicted = np.empty(len(valid))
    order = np.argsort(valid.users, kind="stable")
    bounds = np.searchsorted(valid.users[order], np.arange(fit.n_users + 1))
    for user in range(fit.n_users):
        rows = order[bounds[user] : bounds[user + 1]]
        if len(rows) == 0:
            continue
        span = np.arange(indptr[user], indptr[user + 1])
        shown = rng.choice(span, size=min(revealed, len(span)), replace=False) if len(span) else span
        scores = model.score_folded(model.fold_in(dict(zip(items[shown].tolist(), ratings[shown].tolist())))).numpy()
        predicted[rows] = np.clip(scores[valid.items[rows]], *model.rating_scale)
    return float(np.sqrt(np.mean((predicted - valid.ratings) ** 2)))


def choose_fold_in_reg(config: MFConfig, parts: dict[str, tuple[Dataset, Dataset]], revealed: Sequence[int] = (10, 30)) -> float:
    """The fold_in_reg with the lowest mean fold-in RMSE over datasets and numbers of revealed ratings."""
    models = {name: MatrixFactorization(config, device="cpu").fit(fit) for name, (fit, _) in parts.items()}
    results = {}
    for reg in FOLD_IN_REGS:
        figures = []
        for name, (fit, valid) in parts.items():
            model = models[name]
            model.config = replace(config, fold_in_reg=reg)
            figures += [fold_in_rmse(model, fit, valid, k) for k in revealed]
        results[reg] = float(np.mean(figures))
        print(f"fold_in_reg {reg:g}: mean fold-in RMSE {results[reg]:.4f} {[round(f, 4) for f in figures]}", flush=True)
    return min(results, key=results.get)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="ml-100k,ml-latest-small")
    parser.add_argument("--trials", type=int, default=30, help="random-search candidates before refinement")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random search")
    parser.add_argument("--max-steps", type=int, default=1600, help="skip configurations needing more optimiser steps")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads for this process")
    parser.add_argument("--base", default="{}", help="JSON of MFConfig fields for the starting point")
    parser.add_argument("--no-refine", action="store_true", help="random search only")
    parser.add_argument("--fold-in-only", action="store_true", help="only choose fold_in_reg for --base")
    parser.add_argument("--tolerance", type=float, default=5e-4,
                        help="among configurations this close to the best objective, take the one with fewest steps")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    parts = validation_parts([name.strip() for name in args.datasets.split(",")])
    largest = max(len(fit) for fit, _ in parts.values())
    rng = np.random.default_rng(args.seed)
    tried: dict[str, float] = {}
    configs: dict[str, MFConfig] = {}

    def trial(config: MFConfig, label: str) -> float:
        key = json.dumps(asdict(config), sort_keys=True)
        if key in tried:
            return tried[key]
        if steps(config, largest) > args.max_steps:
            tried[key] = math.inf
            return math.inf
        objective, figures, seconds = score(config, parts)
        tried[key], configs[key] = objective, config
        shown = {name: getattr(config, name) for name in SPACE}
        print(f"{label:>8} objective {objective:.4f} {json.dumps({k: round(v, 4) for k, v in figures.items()})} "
              f"{json.dumps(shown)} ({seconds:.1f} s)", flush=True)
        return objective

    best = MFConfig(**json.loads(args.base))
    if args.fold_in_only:
        print(f"chosen fold_in_reg={choose_fold_in_reg(best, parts)}")
        return
    best_value = trial(best, "start")
    for number in range(args.trials):
        candidate = replace(MFConfig(), **{name: values[rng.integers(len(values))] for name, values in SPACE.items()})
        value = trial(candidate, f"random{number}")
        if value < best_value:
            best, best_value = candidate, value

    improved = not args.no_refine
    while improved:
        improved = False
        for name, values in SPACE.items():
            for value in values:
                candidate = replace(best, **{name: value})
                objective = trial(candidate, "refine")
                if objective < best_value - 1e-4:
                    best, best_value, improved = candidate, objective, True

    # The cheapest of the near-best: fewest optimiser steps, then the smallest embedding.
    near = [configs[key] for key, value in tried.items() if key in configs and value <= best_value + args.tolerance]
    best = min(near, key=lambda c: (steps(c, largest), c.embedding_dim, tried[json.dumps(asdict(c), sort_keys=True)]))
    best_value = tried[json.dumps(asdict(best), sort_keys=True)]
    print(f"cheapest within {args.tolerance} of the best: objective {best_value:.4f}, {steps(best, largest)} steps")
    best = replace(best, fold_in_reg=choose_fold_in_reg(best, parts))
    chosen = {name: getattr(best, name) for name in (*SPACE, "fold_in_reg")}
    print(f"\nchosen (mean validation RMSE {best_value:.4f}): MFConfig(" + ", ".join(f"{k}={v!r}" for k, v in chosen.items()) + ")")


if __name__ == "__main__":
    main()
