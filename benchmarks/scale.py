"""Scale benchmark: time per epoch, peak memory and evaluation time of each model as data grows.

For synthetic datasets (`recengine.data.synthetic.generate_synthetic`, Zipf-like item popularity
with exponent 1, heavy-tailed user activity) of 100 thousand, 1, 10 and 25 million interactions,
up to --max-interactions N (N itself is added when it is not one of these; below 100k a second,
ten times smaller size is added so a growth exponent exists), with the user and item counts of
the MovieLens release of that size:

    100k: 943 x 1,682    1M: 6,040 x 3,706    10M: 69,878 x 10,677    25M: 162,541 x 59,047

(other sizes are interpolated on log-log axes between these anchors), each model is trained with
its default hyper-parameters except `epochs` / `iterations` (--epochs, default 1) and, on a GPU,
`batch_size` (`GPU_BATCH_SIZE`, or --batch-size anywhere). Every (model, size) runs in a fresh
subprocess, so its peak memory is its own; models run one after the other, each from the smallest
size up (each data set is generated once, by the parent process, and shared by the models).

Columns:
  epoch s      wall seconds of the fastest epoch (ALS: iteration = one item and one user half-step
               and the objective), from the model's own `EpochEvent.seconds`; torch's one-off
               optimiser import is paid before timing.
  epoch CPU s  CPU seconds of the process (all threads) in its cheapest epoch, measured between
               `on_epoch` events (the first epoch also pays fit's set-up: CSR and tensors). On a
               machine other jobs share, wall time grows with their load and CPU time does not.
  ratings/s    training interactions / epoch s.
  fit s        the whole `fit` (building the CSR and tensors included).
  peak RSS MB  the process's peak resident memory (VmHWM; `resource.getrusage` off Linux), data
               included;
  data MB      its resident memory just before `fit` (Python, torch, the data set), so the model's
               own share is roughly the difference. On a GPU also `GPU MB`, the peak of
               `torch.cuda.max_memory_allocated`.
  eval s       full-ranking NDCG@10 (`recengine.evaluation.ranking_metrics`, training items
               excluded) over at most `EVAL_USERS` users that have a held-out item; the held-out
               part is a seeded random 1% of the interactions (the rest is the training part).

Last, one line per model: `model=NAME growth_exponent=X`, the least-squares slope of log(epoch
CPU s) against log(interactions); 1 means the work per epoch grows linearly with the data. A
(model, size) whose epoch is predicted (from the smaller sizes' CPU seconds) to take more than
--max-epoch-seconds is skipped with a note, a run longer than --run-timeout is stopped, and models
that are not registered (yet) are skipped with a note, so a run stays bounded on a small machine.

    python benchmarks/scale.py --max-interactions 10000000 [--models mf,als,seq-pooling,neural]
        [--device auto|cpu|cuda] [--epochs 1] [--threads 1] [--batch-size B] [--max-epoch-seconds 600]
        [--run-timeout 3600]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep (shared machines)

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: The benchmark's dataset sizes (interactions).
SIZES = (100_000, 1_000_000, 10_000_000, 25_000_000)
#: (interactions, users, items) of the MovieLens releases: ml-100k, ml-1m, ml-10m, ml-25m.
MOVIELENS_SHAPES = (
    (100_000, 943, 1_682),
    (1_000_209, 6_040, 3_706),
    (10_000_054, 69_878, 10_677),
    (25_000_095, 162_541, 59_047),
)
DEFAULT_MODELS = ("mf", "als", "seq-pooling", "neural")
#: Share of the interactions held out for the evaluation.
HELD_OUT = 0.01
#: At most this many users are ranked in the evaluation.
EVAL_USERS = 2_000
K = 10
#: Batch sizes used on a GPU (the CPU keeps each model's default): rating models take large
#: batches of single ratings; a sequence batch is windows of max_length + 1 items whose full
#: softmax over the catalogue is (batch x 11 x n_items) floats.
GPU_BATCH_SIZE = {"mf": 65_536, "neural": 65_536, "seq-pooling": 1_024, "seq-lstm": 1_024, "seq-transformer": 1_024}
SEED = 0
COLUMNS = (
    "model", "interactions", "users", "items", "device", "batch", "epoch s", "epoch CPU s", "ratings/s", "fit s",
    "peak RSS MB", "data MB", "GPU MB", "eval s", "NDCG@10", "note",
)


# --- pure helpers (tested in tests/test_scale.py) --------------------------------------------
def sizes_up_to(max_interactions: int) -> list[int]:
    """The benchmark sizes up to `max_interactions`: the standard `SIZES` below it, then itself;
    when that leaves one size, a ten times smaller one (at least 1,000) comes first."""
    if isinstance(max_interactions, bool) or not isinstance(max_interactions, int) or max_interactions < 1_000:
        raise ValueError(f"max_interactions must be an integer >= 1000, got {max_interactions!r}")
    sizes = [size for size in SIZES if size < max_interactions] + [max_interactions]
    if len(sizes) == 1:
        sizes.insert(0, max(1_000, max_interactions // 10))
    return sorted(set(sizes))


def shape_for(n_interactions: int) -> tuple[int, int]:
    """(n_users, n_items) of a MovieLens-like dataset with `n_interactions` ratings.

    Piecewise linear in log-log space through `MOVIELENS_SHAPES` (extrapolated with the end
    slopes), then kept feasible: at least 2 users and items, at least 5 ratings per user on
    average, and users x items >= 4 x interactions (density at most 25%).
    """
    if n_interactions < 10:
        raise ValueError(f"n_interactions must be >= 10, got {n_interactions}")
    anchors = np.log([row[0] for row in MOVIELENS_SHAPES])
    log_n = math.log(n_interactions)

    def along(column: int) -> float:
        values = np.log([row[column] for row in MOVIELENS_SHAPES])
        segment = int(np.clip(np.searchsorted(anchors, log_n) - 1, 0, len(anchors) - 2))
        slope = (values[segment + 1] - values[segment]) / (anchors[segment + 1] - anchors[segment])
        return float(math.exp(values[segment] + slope * (log_n - anchors[segment])))

    users = int(round(min(max(2.0, along(1)), n_interactions / 5)))
    items = int(round(max(2.0, along(2), 4.0 * n_interactions / max(users, 1))))
    return max(users, 2), items


def growth_exponent(sizes: Sequence[float], seconds: Sequence[float]) -> float:
    """Least-squares slope of log(seconds) against log(sizes); NaN with fewer than two usable
    points (a point needs a finite, positive time) or a single distinct size."""
    pairs = [(float(n), float(s)) for n, s in zip(sizes, seconds, strict=True) if n > 0 and s is not None and math.isfinite(s) and s > 0]
    if len({n for n, _ in pairs}) < 2:
        return math.nan
    x = np.log([n for n, _ in pairs])
    y = np.log([s for _, s in pairs])
    slope, _ = np.polyfit(x, y, 1)
    return float(slope)


def predict_seconds(sizes: Sequence[float], seconds: Sequence[float], target: float) -> float:
    """Epoch time at `target` interactions extrapolated from measured (size, seconds) pairs:
    from the last point along the least-squares slope (at least 1: nothing gets cheaper per
    rating with more data); NaN with no usable point."""
    pairs = [(n, s) for n, s in zip(sizes, seconds, strict=True) if s is not None and math.isfinite(s) and s > 0]
    if not pairs:
        return math.nan
    slope = growth_exponent(sizes, seconds)
    slope = 1.0 if math.isnan(slope) else max(1.0, slope)
    last_size, last_seconds = max(pairs)
    return float(last_seconds * (target / last_size) ** slope)


@dataclass(frozen=True)
class Measurement:
    """One (model, size) run; figures are None when the run was skipped or failed (see `note`)."""

    model: str
    interactions: int
    users: int
    items: int
    device: str = ""
    batch_size: int | None = None
    epoch_seconds: float | None = None
    epoch_cpu_seconds: float | None = None
    fit_seconds: float | None = None
    peak_rss_mb: float | None = None
    data_rss_mb: float | None = None
    peak_gpu_mb: float | None = None
    eval_seconds: float | None = None
    eval_users: int | None = None
    ndcg: float | None = None
    train_interactions: int | None = None
    note: str = ""

    @property
    def ratings_per_second(self) -> float | None:
        if not self.epoch_seconds or not self.train_interactions:
            return None
        return self.train_interactions / self.epoch_seconds

    def cells(self) -> list[str]:
        def fixed(value: float | None, digits: int) -> str:
            return "" if value is None else f"{value:,.{digits}f}"

        rate = self.ratings_per_second
        return [
            self.model, f"{self.interactions:,}", f"{self.users:,}", f"{self.items:,}", self.device,
            "" if self.batch_size is None else str(self.batch_size),
            fixed(self.epoch_seconds, 2 if (self.epoch_seconds or 0) < 100 else 0),
            fixed(self.epoch_cpu_seconds, 2 if (self.epoch_cpu_seconds or 0) < 100 else 0),
            "" if rate is None else _si(rate), fixed(self.fit_seconds, 1),
            fixed(self.peak_rss_mb, 0), fixed(self.data_rss_mb, 0), fixed(self.peak_gpu_mb, 0),
            fixed(self.eval_seconds, 2), fixed(self.ndcg, 4), self.note,
        ]


def _si(value: float) -> str:
    """3 significant figures with a k/M/G suffix: 1234567 -> '1.23M'."""
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{suffix}"
    return f"{value:.3g}"


def format_table(rows: Sequence[Measurement]) -> str:
    """The rows as an aligned text table (header, rule, one line per row)."""
    from recengine.cli import format_table as text_table  # lazily, like every recengine import here

    return text_table(COLUMNS, [row.cells() for row in rows])


def growth_lines(rows: Sequence[Measurement]) -> list[str]:
    """`model=NAME growth_exponent=X` per model (in first-seen order); X is 'nan' below two sizes.

    The slope is fitted to the epochs' CPU seconds where every measured row of the model has
    them (the work done, which other jobs on a shared machine do not inflate), else to their
    wall seconds."""
    lines = []
    for model in dict.fromkeys(row.model for row in rows):
        measured = [row for row in rows if row.model == model and row.epoch_seconds]
        use_cpu = bool(measured) and all(row.epoch_cpu_seconds for row in measured)
        seconds = [row.epoch_cpu_seconds if use_cpu else row.epoch_seconds for row in measured]
        exponent = growth_exponent([row.interactions for row in measured], seconds)
        lines.append(f"model={model} growth_exponent={exponent:.2f}" if math.isfinite(exponent) else f"model={model} growth_exponent=nan")
    return lines


# --- the subprocesses ------------------------------------------------------------------------
def _current_rss_mb() -> float:
    """Resident memory of this process now (MiB), from /proc (0 where there is none)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def _peak_rss_mb() -> float:
    """Peak resident memory of this process (MiB): VmHWM from /proc, else `getrusage`'s ru_maxrss.

    VmHWM belongs to the process's own address space, which starts afresh at exec. ru_maxrss does
    not on Linux: a child started from a large parent inherits the parent's peak at exec time, so
    it is only the fallback (other systems).
    """
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def generate(n_interactions: int, path: Path) -> None:
    """Write the synthetic data set of `n_interactions` (shape from `shape_for`) to `path` (.npz)."""
    from recengine.data.synthetic import generate_synthetic

    users, items = shape_for(n_interactions)
    data = generate_synthetic(users, items, n_interactions, seed=SEED)
    staging = path.with_name(f".{path.name}.{os.getpid()}.npz")
    np.savez(staging, users=data.users, items=data.items, ratings=data.ratings, timestamps=data.timestamps,
             shape=np.array([data.n_users, data.n_items], dtype=np.int64))
    os.replace(staging, path)


def _load(path: Path):
    """The saved data set as (train, test): a seeded random HELD_OUT share of the rows is the test part."""
    from recengine.data.dataset import Dataset, IdMap, make_catalogue

    with np.load(path, allow_pickle=False) as saved:
        arrays = {key: saved[key] for key in ("users", "items", "ratings", "timestamps")}
        n_users, n_items = (int(v) for v in saved["shape"])
    item_ids = np.arange(1, n_items + 1, dtype=np.int64)
    catalogue = make_catalogue(item_ids, None, None, arrays["items"], arrays["ratings"])
    data = Dataset.from_arrays(
        "synthetic", arrays["users"], arrays["items"], arrays["ratings"], arrays["timestamps"],
        user_map=IdMap(np.arange(1, n_users + 1, dtype=np.int64)), item_map=IdMap(item_ids), catalogue=catalogue,
    )
    test = np.random.default_rng(SEED).random(len(data)) < HELD_OUT
    return data.subset(~test, "train"), data.subset(test, "test")


def measure(model_name: str, path: Path, device_name: str, epochs: int, batch_size: int | None) -> Measurement:
    """Fit `model_name` on the data set at `path` and measure it (run in its own process)."""
    import torch

    from recengine.evaluation import ranking_metrics, relevant_items
    from recengine.models.base import create_model, describe_device, get_model_class, resolve_device

    device = resolve_device(device_name)
    _warm_up_torch(device)
    train, test = _load(path)
    config_cls = get_model_class(model_name).Config
    fields = {field.name for field in dataclasses.fields(config_cls)}
    hyper: dict[str, int] = {}
    if "epochs" in fields:
        hyper["epochs"] = epochs
    elif "iterations" in fields:
        hyper["iterations"] = epochs
    if batch_size is None and device.type == "cuda":
        batch_size = GPU_BATCH_SIZE.get(model_name)
    if "batch_size" in fields and batch_size is not None:
        hyper["batch_size"] = batch_size
    model = create_model(model_name, device=device, **hyper)
    used_batch = getattr(model.config, "batch_size", None)
    if used_batch == 0:  # mf's "automatic" batch size: report the one it uses
        from recengine.models.mf import automatic_batch_size

        used_batch = automatic_batch_size(len(train))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    data_mb = _current_rss_mb()
    cpu_marks = [time.process_time()]  # CPU seconds of this process (all its threads) at each epoch's end
    model.fit(train, on_epoch=lambda event: cpu_marks.append(time.process_time()))
    epoch_seconds = min(event.seconds for event in model.history)
    epoch_cpu_seconds = float(np.min(np.diff(cpu_marks)))  # the first includes fit's set-up (CSR, tensors)

    indptr, _ = relevant_items(train, test)
    candidates = np.flatnonzero(np.diff(indptr) > 0)
    if len(candidates) > EVAL_USERS:
        candidates = np.sort(np.random.default_rng(SEED).choice(candidates, size=EVAL_USERS, replace=False))
    started = time.perf_counter()
    ndcg = ranking_metrics(model.score_users, train, test, k=K, metrics=["ndcg"], users=candidates)[f"ndcg@{K}"]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    eval_seconds = time.perf_counter() - started
    return Measurement(
        model=model_name, interactions=len(train) + len(test), users=train.n_users, items=train.n_items,
        device=describe_device(device), batch_size=used_batch, epoch_seconds=epoch_seconds, epoch_cpu_seconds=epoch_cpu_seconds,
        fit_seconds=model.fit_seconds, peak_rss_mb=_peak_rss_mb(),
        data_rss_mb=data_mb, peak_gpu_mb=torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        eval_seconds=eval_seconds, eval_users=len(candidates), ndcg=ndcg, train_interactions=len(train),
    )


def _warm_up_torch(device) -> None:
    """Pay torch's one-off first-optimiser-step import (torch._dynamo) and CUDA start-up outside any timing."""
    import torch

    parameter = torch.nn.Parameter(torch.zeros(8, device=device))
    optimizer = torch.optim.AdamW([parameter])
    (parameter @ parameter.T.new_ones(8)).backward()
    optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _python() -> list[str]:
    return [sys.executable, str(Path(__file__).resolve())]


def _run_child(arguments: list[str], threads: int | None, timeout: float) -> subprocess.CompletedProcess | None:
    environment = dict(os.environ)
    if threads:
        environment.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    try:
        return subprocess.run(_python() + arguments, capture_output=True, text=True, env=environment, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def _child_note(completed: subprocess.CompletedProcess | None, timeout: float) -> str:
    if completed is None:
        return f"stopped after {timeout:.0f} s (--run-timeout)"
    last = (completed.stderr.strip().splitlines() or ["no output"])[-1]
    return f"failed (exit {completed.returncode}): {last[:160]}"


# --- main ------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-interactions", type=int, default=10_000_000, help="largest data set (interactions)")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated model names")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--epochs", type=int, default=1, help="epochs (ALS: iterations) per fit; the fastest is reported")
    parser.add_argument("--batch-size", type=int, default=None, help="batch size of every model that has one "
                        "(default: each model's own on CPU, GPU_BATCH_SIZE on a GPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch/OpenMP threads per run (default: torch's)")
    parser.add_argument("--max-epoch-seconds", type=float, default=600.0,
                        help="skip a (model, size) whose epoch is predicted to take more CPU seconds than this")
    parser.add_argument("--run-timeout", type=float, default=3_600.0, help="stop a single (model, size) run after this many seconds")
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "DATA"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs must be >= 1, got {args.epochs}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.worker:
        result = measure(args.worker[0], Path(args.worker[1]), args.device, args.epochs, args.batch_size)
        print("RESULT " + json.dumps(dataclasses.asdict(result)))
        return 0
    try:
        sizes = sizes_up_to(args.max_interactions)
    except ValueError as error:
        parser.error(str(error))

    from recengine.models.base import describe_device, model_names, resolve_device

    device = resolve_device(args.device)
    registered = set(model_names())
    wanted = [name.strip() for name in args.models.split(",") if name.strip()]
    import torch

    print(f"scale benchmark: sizes {', '.join(f'{n:,}' for n in sizes)}; device {describe_device(device)}; "
          f"threads {args.threads or torch.get_num_threads()}; epochs {args.epochs}; evaluation: NDCG@{K} over at most "
          f"{EVAL_USERS:,} users, {HELD_OUT:.0%} random hold-out; load {_load_average()}", flush=True)
    rows: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="recengine-scale-") as folder:
        data_paths: dict[int, Path] = {}  # size -> saved data set

        def data_for(size: int) -> Path:
            """The data set of `size`, generated (in this process, then freed) the first time it is asked for."""
            if size not in data_paths:
                started = time.perf_counter()
                data_paths[size] = Path(folder) / f"synthetic-{size}.npz"
                generate(size, data_paths[size])
                users, items = shape_for(size)
                print(f"  data: {size:,} interactions ({users:,} users x {items:,} items) generated in "
                      f"{time.perf_counter() - started:.1f} s", flush=True)
            return data_paths[size]

        for name in wanted:  # model by model, so a slow model cannot starve the others' small sizes
            for size in sizes:
                users, items = shape_for(size)
                if name not in registered:
                    rows.append(Measurement(name, size, users, items, note=f"skipped: {name!r} is not a registered model"))
                    continue
                done = [row for row in rows if row.model == name and row.epoch_cpu_seconds]
                predicted = predict_seconds([r.interactions for r in done], [r.epoch_cpu_seconds for r in done], size)
                if predicted > args.max_epoch_seconds:
                    rows.append(Measurement(name, size, users, items, note=_skip_note(predicted, args.max_epoch_seconds)))
                else:
                    path = data_for(size)
                    command = ["--worker", name, str(path), "--device", args.device, "--epochs", str(args.epochs)]
                    if args.batch_size:
                        command += ["--batch-size", str(args.batch_size)]
                    completed = _run_child(command + _thread_args(args.threads), args.threads, args.run_timeout)
                    rows.append(_parse_result(completed) or Measurement(name, size, users, items,
                                                                        note=_child_note(completed, args.run_timeout)))
                print("  " + "  ".join(cell for cell in rows[-1].cells() if cell), flush=True)
    print()
    print(format_table(rows))
    print(f"load average after the run: {_load_average()}")
    for line in growth_lines(rows):
        print(line)
    return 0


def _skip_note(predicted: float, limit: float) -> str:
    return f"skipped: epoch predicted {predicted:,.0f} s > --max-epoch-seconds {limit:,.0f}"


def _thread_args(threads: int | None) -> list[str]:
    return ["--threads", str(threads)] if threads else []


def _parse_result(completed: subprocess.CompletedProcess | None) -> Measurement | None:
    if completed is None or completed.returncode != 0:
        return None
    for line in reversed(completed.stdout.splitlines()):
        if line.startswith("RESULT "):
            return Measurement(**json.loads(line[len("RESULT "):]))
    return None


def _load_average() -> str:
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
