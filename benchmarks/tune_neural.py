"""Choose NeuralConfig's defaults on validation data carved out of the TRAINING parts only.

Protocol (as benchmarks/tune_mf.py does for MF): for each benchmark split of the neural model's
targets (ml-100k random 80/20 with seed 42, ml-100k fold u1) the training part is split again at
random (`split_validation`, 10%, seed 0) into "fit" and "valid"; the test parts are never read.
Every candidate is fitted on each "fit" part and scored by its RMSE on the matching "valid"
part; the objective is the mean over the parts. Candidates are the starting point (`--base`),
any given with `--candidate` (repeatable JSON of changes to the base), then `--trials` random
draws from SPACE around the base. Each trial prints its changes, the per-part validation RMSE
(and the best epoch's, from a per-epoch validation curve), the objective, the fit seconds (wall)
and the fits' CPU seconds (this process, all threads: steadier than wall time on a shared machine).

    RECENGINE_DATA_DIR=/work/shared/datasets python benchmarks/tune_neural.py [--threads 1]
        [--parts ml-100k:random,ml-100k:u1] [--base '{"fusion": "mlp"}'] [--candidate '{"dropout": 0.3}']
        [--trials 0] [--seed 0]

The chosen values go into NeuralConfig by hand, with the figures in its docstring.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recengine.data.dataset import Dataset  # noqa: E402
from recengine.models.base import config_from_dict  # noqa: E402
from recengine.models.neural import NeuralConfig, NeuralRecommender  # noqa: E402

#: The grid each hyper-parameter is drawn from in the random search.
SPACE: dict[str, tuple[Any, ...]] = {
    "fusion": ("mlp", "neumf"),
    "implicit_feedback": (False, True),
    "implicit_max_items": (32, 64, 128, 256),
    "embedding_dim": (32, 64, 128),
    "hidden": ((16,), (32,), (64,), (64, 32), (128, 64)),
    "activation": ("relu", "gelu"),
    "dropout": (0.0, 0.1, 0.2, 0.3, 0.5),
    "epochs": (8, 10, 15),
    "learning_rate": (0.003, 0.005, 0.01),
    "reg_embeddings": (0.05, 0.1, 0.15),
    "reg_uniform": (0.0, 0.05),
    "weight_decay": (0.0, 0.01, 0.1),
}


def validation_parts(specs: Sequence[str]) -> dict[str, tuple[Dataset, Dataset]]:
    """{"dataset:split": (fit, valid)} carved from each benchmark split's training part."""
    from recengine.data.movielens import load_dataset
    from recengine.data.splits import make_split, split_validation

    parts, loaded = {}, {}
    for spec in specs:
        dataset_name, split_name = spec.split(":")
        if dataset_name not in loaded:
            loaded[dataset_name] = load_dataset(dataset_name)
        train = make_split(loaded[dataset_name], split_name, seed=42).train
        inner = split_validation(train, fraction=0.1, seed=0)
        parts[spec] = (inner.train, inner.test)
    return parts


def score(
    config: NeuralConfig, parts: dict[str, tuple[Dataset, Dataset]]
) -> tuple[float, dict[str, float], dict[str, float], float, float]:
    """(objective, {part: valid RMSE at the end}, {part: best epoch's valid RMSE}, fit seconds, fit CPU seconds)."""
    final, best, seconds, cpu_seconds = {}, {}, 0.0, 0.0
    for name, (fit, valid) in parts.items():
        cpu_started = time.process_time()
        model = NeuralRecommender(config, device="cpu").fit(fit, valid)
        cpu_seconds += time.process_time() - cpu_started
        predicted = model.predict(valid.users, valid.items).astype(np.float64)
        final[name] = float(np.sqrt(np.mean((predicted - valid.ratings) ** 2)))
        best[name] = min(event.metrics["rmse"] for event in model.history)
        seconds += model.fit_seconds
    return float(np.mean(list(final.values()))), final, best, seconds, cpu_seconds


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default="ml-100k:random,ml-100k:u1", help="comma-separated dataset:split")
    parser.add_argument("--base", default="{}", help="JSON of NeuralConfig fields for the starting point")
    parser.add_argument("--candidate", action="append", default=[], help="JSON of changes to the base (repeatable)")
    parser.add_argument("--trials", type=int, default=0, help="random-search candidates after the given ones")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random search")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads for this process")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    parts = validation_parts([spec.strip() for spec in args.parts.split(",")])
    base = config_from_dict(NeuralConfig, json.loads(args.base))
    candidates = [("base", {})] + [(f"given{n}", json.loads(text)) for n, text in enumerate(args.candidate)]
    rng = np.random.default_rng(args.seed)
    candidates += [
        (f"random{n}", {name: values[rng.integers(len(values))] for name, values in SPACE.items()}) for n in range(args.trials)
    ]
    results = []
    for label, changes in candidates:
        config = config_from_dict(NeuralConfig, {**_as_json(base), **changes})
        started = time.perf_counter()
        objective, final, best, fit_seconds, cpu_seconds = score(config, parts)
        results.append((objective, label, changes))
        print(
            f"{label:>8} objective {objective:.4f} final {json.dumps({k: round(v, 4) for k, v in final.items()})} "
            f"best-epoch {json.dumps({k: round(v, 4) for k, v in best.items()})} {json.dumps(changes)} "
            f"(fit {fit_seconds:.1f} s, CPU {cpu_seconds:.1f} s, {time.perf_counter() - started:.1f} s in all)",
            flush=True,
        )
    objective, label, changes = min(results, key=lambda result: result[0])
    print(f"\nbest: {label} objective {objective:.4f} with changes {json.dumps(changes)} to {json.dumps(_as_json(base))}")


def _as_json(config: NeuralConfig) -> dict[str, Any]:
    return {key: list(value) if isinstance(value, tuple) else value for key, value in config.__dict__.items()}


if __name__ == "__main__":
    main()
