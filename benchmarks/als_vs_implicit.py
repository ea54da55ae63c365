"""recengine's implicit ALS against the `implicit` library's AlternatingLeastSquares, side by side.

Protocol: ml-latest-small, random 80/20 split by rating with seed 42 (`make_split(ds, "random", 42)`).
Both libraries get the same factors (64), iterations (15) and conjugate-gradient steps (3), and both
are scored by the same code: `recengine.evaluation.ranking_metrics` (full ranking, training items
excluded, pessimistic ties) over `score = user_factors @ item_factors.T`. Rows:

* recengine `als`: `ALSConfig` defaults.
* implicit, same objective: implicit is given exactly recengine's confidences (its input matrix
  holds c_ui = 1 + alpha * f(r_ui); alpha=1) and regularization, so both minimise the same loss.
* implicit, library defaults: the raw ratings as confidences, regularization=0.01, alpha=1.

Fit seconds are the median of `--repeats` fits of each model, interleaved in one process, with
`--threads` threads for both (torch intra-op threads; implicit's `num_threads`, its BLAS held to
one thread as implicit recommends). On a shared machine OpenMP's default spin-waiting makes
multi-threaded torch stall whenever another process holds a core, so unless OMP_WAIT_POLICY is
already set this script sets it to PASSIVE (for both libraries) before torch loads; the value
used is printed.

`--tune` instead chooses ALSConfig's defaults on validation data carved out of the TRAINING part
only (`split_validation`, 10 %, seeds 0 and 1; the test part is never read): a grid over
confidence, alpha, regularization and min_rating, ranked by the mean NDCG@10 over the two
validation parts. It prints every candidate and the best one.

    pip install implicit          # only this benchmark needs it; recengine never imports it
    RECENGINE_DATA_DIR=/work/shared/datasets python benchmarks/als_vs_implicit.py [--threads 2] [--repeats 3]
    RECENGINE_DATA_DIR=/work/shared/datasets python benchmarks/als_vs_implicit.py --tune [--threads 1]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch (and its OpenMP runtime) loads

import argparse  # noqa: E402
import itertools  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass, replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable, Sequence  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recengine.data.dataset import Dataset  # noqa: E402
from recengine.evaluation import ranking_metrics  # noqa: E402
from recengine.models.als import ALSConfig, AlternatingLeastSquares, confidence_weights  # noqa: E402

DATASET = "ml-latest-small"
SPLIT_SEED = 42
K = 10
METRICS = ("precision", "map", "ndcg")
COLUMNS = ("model", f"P@{K}", f"MAP@{K}", f"NDCG@{K}", "fit s")
#: The validation grid of `--tune` (every combination is fitted on each validation part).
GRID: dict[str, tuple] = {
    "confidence": ("linear", "log"),
    "alpha": (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0),
    "regularization": (1.0, 5.0, 10.0, 20.0, 30.0, 50.0, 80.0),
    "min_rating": (0.0, 3.0),
}
VALIDATION_SEEDS = (0, 1)


@dataclass(frozen=True)
class Result:
    label: str
    metrics: dict[str, float]
    seconds: list[float]

    @property
    def fit_seconds(self) -> float:
        return statistics.median(self.seconds)

    def cells(self) -> list[str]:
        return [self.label] + [f"{self.metrics[f'{name}@{K}']:.4f}" for name in METRICS] + [f"{self.fit_seconds:.2f}"]


def load_split() -> tuple[Dataset, Dataset]:
    from recengine.data.movielens import load_dataset
    from recengine.data.splits import make_split

    split = make_split(load_dataset(DATASET), "random", SPLIT_SEED)
    return split.train, split.test


def factor_scores(user_factors: np.ndarray, item_factors: np.ndarray) -> Callable[[np.ndarray], torch.Tensor]:
    """The score function of a plain factor model: user_factors[u] @ item_factors.T (float32)."""
    users = torch.from_numpy(np.ascontiguousarray(user_factors, dtype=np.float32))
    items = torch.from_numpy(np.ascontiguousarray(item_factors, dtype=np.float32))
    return lambda batch: users[torch.as_tensor(batch, dtype=torch.long)] @ items.T


def evaluate(score_fn: Callable[[np.ndarray], torch.Tensor], train: Dataset, test: Dataset) -> dict[str, float]:
    return ranking_metrics(score_fn, train, test, k=K, metrics=METRICS)


def fit_recengine(config: ALSConfig, train: Dataset) -> tuple[AlternatingLeastSquares, float]:
    model = AlternatingLeastSquares(config, device="cpu")
    started = time.perf_counter()
    model.fit(train)
    return model, time.perf_counter() - started


def implicit_matrix(train: Dataset, values: np.ndarray):
    """The training ratings as implicit's (users x items) CSR input with the given values."""
    import scipy.sparse

    indptr, items, _ = train.user_item_csr()
    matrix = scipy.sparse.csr_matrix((values.astype(np.float32), items, indptr), shape=(train.n_users, train.n_items))
    matrix.eliminate_zeros()  # ratings below min_rating got value 0: unobserved, as in recengine
    return matrix


def fit_implicit(matrix, factors: int, iterations: int, regularization: float, threads: int, seed: int):
    from implicit.cpu.als import AlternatingLeastSquares as ImplicitALS
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):
        model = ImplicitALS(
            factors=factors, iterations=iterations, regularization=regularization, alpha=1.0,
            random_state=seed, num_threads=threads,
        )
        started = time.perf_counter()
        model.fit(matrix, show_progress=False)
        seconds = time.perf_counter() - started
    return model, seconds


def print_table(results: Sequence[Result]) -> None:
    table = [list(COLUMNS)] + [result.cells() for result in results]
    widths = [max(len(row[c]) for row in table) for c in range(len(COLUMNS))]
    for number, row in enumerate(table):
        print("  ".join(cell.ljust(width) if c == 0 else cell.rjust(width) for c, (cell, width) in enumerate(zip(row, widths))))
        if number == 0:
            print("  ".join("-" * width for width in widths))


def compare(threads: int, repeats: int, factors: int, iterations: int) -> int:
    try:
        import implicit  # noqa: F401
    except ImportError:
        print("the `implicit` library is not installed: `pip install implicit` (only this benchmark needs it)")
        return 2
    train, test = load_split()
    config = replace(ALSConfig(), factors=factors, iterations=iterations)
    indptr, items, ratings = train.user_item_csr()
    same_values = np.where(ratings >= config.min_rating, confidence_weights(ratings, config), 0.0)
    candidates = {
        "recengine als (defaults)": None,
        "implicit, same objective": implicit_matrix(train, same_values),
        "implicit, library defaults": implicit_matrix(train, ratings),
    }
    regularizations = {"implicit, same objective": config.regularization, "implicit, library defaults": 0.01}
    seconds: dict[str, list[float]] = {label: [] for label in candidates}
    fitted: dict[str, Callable[[np.ndarray], torch.Tensor]] = {}
    for _ in range(repeats):  # interleaved, so a change of machine load hits every model alike
        for label, matrix in candidates.items():
            if matrix is None:
                model, took = fit_recengine(config, train)
                fitted[label] = model.score_users
            else:
                model, took = fit_implicit(matrix, factors, iterations, regularizations[label], threads, config.seed)
                fitted[label] = factor_scores(model.user_factors, model.item_factors)
            seconds[label].append(took)
    results = [Result(label, evaluate(fitted[label], train, test), seconds[label]) for label in candidates]

    import implicit as implicit_module

    print(f"{DATASET}, random 80/20 split (seed {SPLIT_SEED}): {train.n_users} users x {train.n_items} items, "
          f"{len(train)} training / {len(test)} test ratings")
    policy = os.environ.get("OMP_WAIT_POLICY")
    print(f"factors={factors} iterations={iterations} cg_steps={config.cg_steps}; threads={threads} "
          f"(torch {torch.__version__}, implicit {implicit_module.__version__}, OMP_WAIT_POLICY={policy}); "
          f"fit seconds: median of {repeats}")
    print(f"recengine config: {config}")
    print()
    print_table(results)
    print()
    ours = results[0]
    for other in results[1:]:
        verdicts = []
        for name in METRICS:
            key = f"{name}@{K}"
            difference = ours.metrics[key] - other.metrics[key]
            verdicts.append(f"{key} {'>=' if difference >= 0 else '<'} ({difference:+.4f})")
        ratio = ours.fit_seconds / other.fit_seconds
        verdict = "ok" if ratio <= 2 else "MISS"
        print(f"vs {other.label}: " + ", ".join(verdicts) + f"; fit time ratio {ratio:.2f} (target <= 2.00: {verdict})")
    loads = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPUs, load average {loads[0]:.2f} / {loads[1]:.2f} / {loads[2]:.2f} (1 / 5 / 15 min)")
    return 0


def tune(factors: int, iterations: int) -> int:
    from recengine.data.splits import split_validation

    train, _ = load_split()  # only the training part is used
    parts = [split_validation(train, 0.1, seed=seed) for seed in VALIDATION_SEEDS]
    base = replace(ALSConfig(), factors=factors, iterations=iterations)
    names = list(GRID)
    rows = []
    print(f"tuning on {len(parts)} validation parts of the {DATASET} training data; objective: mean NDCG@{K}")
    for values in itertools.product(*(GRID[name] for name in names)):
        config = replace(base, **dict(zip(names, values)))
        scores = []
        for part in parts:
            model, _ = fit_recengine(config, part.train)
            scores.append(evaluate(model.score_users, part.train, part.test))
        mean = {key: float(np.mean([s[key] for s in scores])) for key in scores[0]}
        rows.append((mean[f"ndcg@{K}"], values, mean))
        setting = "  ".join(f"{n}={v}" for n, v in zip(names, values))
        print(setting, " ", "  ".join(f"{k}={v:.4f}" for k, v in mean.items()), flush=True)
    rows.sort(key=lambda row: -row[0])
    print("\nbest five:")
    for objective, values, mean in rows[:5]:
        print(f"  ndcg@{K}={objective:.4f}  " + ", ".join(f"{n}={v!r}" for n, v in zip(names, values)))
    best = dict(zip(names, rows[0][1]))
    print(f"\nchosen: ALSConfig({', '.join(f'{k}={v!r}' for k, v in best.items())})")
    print(f"current defaults: {asdict(ALSConfig())}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="threads for both libraries (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="fits per model; the median time is reported")
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--tune", action="store_true", help="choose the defaults on validation data instead")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.repeats < 1:
        parser.error("--threads and --repeats must be positive")
    torch.set_num_threads(args.threads)
    if args.tune:
        return tune(args.factors, args.iterations)
    return compare(args.threads, args.repeats, args.factors, args.iterations)


if __name__ == "__main__":
    raise SystemExit(main())
