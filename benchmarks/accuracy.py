"""Accuracy of every registered model on the standard MovieLens splits, against targets and anchors.

Rows (one per dataset, split and model, each model with its default hyper-parameters):

* ml-100k, canonical fold u1 (u1.base / u1.test);
* ml-100k, mean over the five canonical folds u1..u5 (skipped with --quick);
* ml-100k, random 80/20 split by rating with seed 42 (`make_split(data, "random", seed=42)`);
* ml-latest-small, random 80/20 split by rating with seed 42.

Columns: RMSE and MAE of `predict` on the test ratings (explicit models only; blank for implicit
ones), full-ranking precision@10, NDCG@10 and MAP@10 (`recengine.evaluation`: training items
excluded, pessimistic ties), fit seconds, device, the RMSE target (a model's own target where it
has one, e.g. the neural model's, else the row's) and an anchor: Surprise's published SVD++ / SVD
RMSE for the ml-100k folds, fastai's `collab_learner` with an MLP for ml-100k random 80/20 (none is
published for ml-latest-small).

Fit seconds measure `model.fit` alone. torch imports its compiler stack (`torch._dynamo`) on the
first optimiser step of a process, a one-off cost of a second or more that is not training; it
is paid before timing and printed on its own line.

    RECENGINE_DATA_DIR=/work/shared/datasets python benchmarks/accuracy.py [--datasets ml-100k,ml-latest-small]
        [--models mf,...] [--quick] [--device auto|cpu|cuda] [--threads N]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recengine.data.dataset import Dataset  # noqa: E402
from recengine.evaluation import evaluate_model  # noqa: E402
from recengine.models.base import create_model, describe_device, get_model_class, model_names, resolve_device  # noqa: E402
from recengine.cli import format_table as text_table  # noqa: E402

K = 10
#: RMSE targets per (dataset, split label).
TARGETS = {("ml-100k", "u1"): 0.920, ("ml-100k", "u1..u5 mean"): 0.912, ("ml-latest-small", "random 80/20"): 0.860}
#: RMSE targets of one model family, per (model, dataset, split label); they replace TARGETS' figure.
MODEL_TARGETS = {("neural", "ml-100k", "u1"): 0.915, ("neural", "ml-100k", "random 80/20"): 0.895}
#: Published RMSE for the same protocol: Surprise's SVD++ / SVD on the folds, fastai's MLP on a random 20%.
ANCHORS = {
    ("ml-100k", "u1"): "SVD++ 0.934 / SVD 0.947",
    ("ml-100k", "u1..u5 mean"): "SVD++ 0.9225 / SVD 0.938",
    ("ml-100k", "random 80/20"): "fastai collab_learner MLP 0.901",
}
FOLDS = ("u1", "u2", "u3", "u4", "u5")
COLUMNS = ("dataset", "split", "model", "RMSE", "MAE", "P@10", "NDCG@10", "MAP@10", "fit s", "device", "target", "anchor")


@dataclass(frozen=True)
class Row:
    dataset: str
    split: str
    model: str
    metrics: dict[str, float]
    fit_seconds: float
    device: str

    def cells(self) -> list[str]:
        def figure(key: str, digits: int = 4) -> str:
            value = self.metrics.get(key)
            return "" if value is None else f"{value:.{digits}f}"

        # Targets and anchors are RMSE figures: shown for explicit models only.
        rmse = self.metrics.get("rmse")
        target = MODEL_TARGETS.get((self.model, self.dataset, self.split), TARGETS.get((self.dataset, self.split)))
        target = target if rmse is not None else None
        verdict = "" if target is None else f"<={target:.3f}" + (" ok" if rmse <= target else " MISS")
        anchor = ANCHORS.get((self.dataset, self.split), "") if rmse is not None else ""
        return [
            self.dataset, self.split, self.model, figure("rmse"), figure("mae"), figure(f"precision@{K}"),
            figure(f"ndcg@{K}"), figure(f"map@{K}"), f"{self.fit_seconds:.2f}", self.device, verdict, anchor,
        ]


def print_table(rows: Sequence[Row]) -> None:
    print(text_table(COLUMNS, [row.cells() for row in rows]))


def splits_for(dataset: Dataset, quick: bool) -> list[tuple[str, list[tuple[Dataset, Dataset]]]]:
    """[(split label, [(train, test), ...])]: the folds whose figures are averaged into one row."""
    from recengine.data.splits import make_split

    def pair(name: str) -> tuple[Dataset, Dataset]:
        split = make_split(dataset, name, seed=42)
        return split.train, split.test

    if dataset.name == "ml-100k":
        random = ("random 80/20", [pair("random")])
        if quick:
            return [("u1", [pair("u1")]), random]
        folds = [pair(fold) for fold in FOLDS]
        return [("u1", folds[:1]), ("u1..u5 mean", folds), random]
    return [("random 80/20", [pair("random")])]


def evaluate(name: str, train: Dataset, test: Dataset, device: torch.device) -> tuple[dict[str, float], float]:
    model = create_model(name, device=device)
    model.fit(train)
    return evaluate_model(model, train, test, k=K), model.fit_seconds


def warm_up_torch() -> float:
    """Pay torch's one-off first-optimiser-step import (torch._dynamo) outside any timing."""
    started = time.perf_counter()
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([parameter])
    parameter.sum().backward()
    optimizer.step()
    return time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="ml-100k,ml-latest-small", help="comma-separated dataset names")
    parser.add_argument("--models", default=None, help=f"comma-separated model names (default every registered: {','.join(model_names())})")
    parser.add_argument("--quick", action="store_true", help="ml-100k: fold u1 and random 80/20 only (no five-fold mean)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads for this process (default torch's: one per core); "
                        "1 keeps timings stable on a machine other jobs are using")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from recengine.data.movielens import load_dataset

    # Next-item models have their own protocols and table: benchmarks/sequence.py.
    models = args.models.split(",") if args.models else [n for n in model_names() if not get_model_class(n).sequential]
    unknown = sorted(set(models) - set(model_names()))
    if unknown:
        parser.error(f"unknown model(s) {unknown}; registered: {model_names()}")
    device = resolve_device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {describe_device(device)}; "
          f"one-off torch optimiser import before timing: {warm_up_torch():.2f} s")

    rows: list[Row] = []
    for dataset_name in args.datasets.split(","):
        dataset = load_dataset(dataset_name.strip())
        for label, folds in splits_for(dataset, args.quick):
            for model_name in models:
                results = []
                if label == "u1..u5 mean":  # reuse the u1 row's fit for fold u1
                    previous = next(r for r in rows if (r.dataset, r.split, r.model) == (dataset.name, "u1", model_name))
                    results.append((previous.metrics, previous.fit_seconds))
                    folds_to_run = folds[1:]
                else:
                    folds_to_run = folds
                for train, test in folds_to_run:
                    results.append(evaluate(model_name, train, test, device))
                keys = results[0][0].keys()
                mean = {key: float(np.mean([metrics[key] for metrics, _ in results])) for key in keys}
                row = Row(dataset.name, label, model_name, mean, float(np.mean([s for _, s in results])), describe_device(device))
                rows.append(row)
                print(f"  {' '.join(row.cells()[:4])}  ({row.fit_seconds:.2f} s fit)", flush=True)
    print()
    print_table(rows)


if __name__ == "__main__":
    main()
