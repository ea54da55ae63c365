"""Next-item accuracy of the sequence models against popularity, under two protocols.

1. Classic (Spotlight's): ml-100k, 20 % of the users held out whole (`split_by_user`, seed 42);
   every test user's time-ordered ratings are cut into windows of 10 (step 10) and each window's
   last item is ranked among all items given the 9 before it (`evaluate_next_item`). Targets:
   seq-transformer MRR >= 0.070, seq-lstm >= 0.065, seq-pooling >= 0.045; anchors: popularity
   about 0.025, Spotlight's pooling (3 epochs) about 0.042, Spotlight's best (LSTM, adaptive
   hinge, 10 epochs) 0.052-0.058.
2. Leave-last-out, on ml-100k and ml-latest-small: each user's last item is the test target
   and the one before it the validation target. Models are fitted on everything before the
   validation item (validation MRR reported per epoch), then rank the test item given the user's
   history up to it, history items excluded (`evaluate_last_item`): hit-rate@10, NDCG@10, MRR.

Every model uses its default hyper-parameters (chosen with `--tune`, below), except that on
ml-latest-small (9,724 items) they train with the sampled softmax (`--large-catalogue-loss`).
Fit seconds measure `model.fit` alone, on the threads given by `--threads` (the machine's load
is printed alongside: on a shared machine it dominates the timings).

`--tune` instead scores a small grid of candidate settings per model under protocol 1 on
*validation users carved from the training users* (`split_by_user(train, 0.2, seed=7)`), never
on the test users, and prints validation MRR and fit seconds; the defaults in
`recengine/models/sequence.py` are the best settings of that grid that train in well under a
minute.

    RECENGINE_DATA_DIR=/work/shared/datasets python benchmarks/sequence.py [--models ...] [--threads 2]
        [--datasets ml-100k,ml-latest-small] [--protocols 1,2] [--tune]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recengine.baselines import Popularity  # noqa: E402
from recengine.data.dataset import Dataset  # noqa: E402
from recengine.data.splits import Split, split_by_user, split_leave_last_out  # noqa: E402
from recengine.models.base import create_model  # noqa: E402
from recengine.models.sequence import AUTO_SOFTMAX_MAX_ITEMS, evaluate_last_item, evaluate_next_item  # noqa: E402
from recengine.cli import format_table as text_table  # noqa: E402

SEQUENCE_MODELS = ("seq-pooling", "seq-lstm", "seq-transformer")
#: Protocol-1 MRR targets on ml-100k.
TARGETS = {"seq-pooling": 0.045, "seq-lstm": 0.065, "seq-transformer": 0.070}
ANCHORS = {
    "popularity": "about 0.025",
    "seq-pooling": "Spotlight pooling 0.042",
    "seq-lstm": "Spotlight best 0.052-0.058",
    "seq-transformer": "Spotlight best 0.052-0.058",
}
#: Catalogues at least this large train with the sampled softmax in protocol 2.
LARGE_CATALOGUE = AUTO_SOFTMAX_MAX_ITEMS + 1  # where the models' own loss="auto" switches

#: Candidate settings for `--tune` (each on top of the model's defaults). What was tried, with its
#: validation MRR (one thread, load 2-8 on 2 cores, fit seconds 30-175 accordingly):
#:   pooling, step 11 (default) 0.0606; 5 epochs 0.0596; step 5 + 5 epochs 0.0603; tied 0.0487.
#:   recurrent, step 11: LSTM 0.0534, LSTM 5 epochs 0.0527, LSTM dropout 0 0.0483, LSTM lr 0.01 0.0569,
#:     LSTM dropout 0.4 + lr 0.01 0.0549, GRU 0.0604, GRU dropout 0.4 0.0550;
#:     step 5: GRU 0.0645 (default), GRU step 3 + 5 epochs 0.0599, LSTM lr 0.01 0.0576.
#:   transformer, step 11: 0.0576, 5 epochs 0.0454, 15 epochs 0.0550, 1 layer 0.0549, dropout 0 0.0547,
#:     dropout 0.4 0.0427, + weight decay 0.1 0.0500, + d=128 0.0524, lr 0.01 0.0538;
#:     step 5: 0.0637, 6 epochs 0.0565; step 3 + 5 epochs 0.0575 (torch's TransformerEncoderLayer);
#:     step 5 with the lighter block now in use: 0.0612 (default), 1 layer 0.0580, d=32 0.0530.
#:   recurrent d=32 (GRU, step 5) 0.0549.
#: (The standard error of a validation MRR here is about 0.005: about 1,400 windows.)
TUNING_GRID: dict[str, list[dict[str, Any]]] = {
    "seq-pooling": [{}, {"epochs": 5}, {"window_step": 5, "epochs": 5}, {"tie_weights": True}],
    "seq-lstm": [{}, {"window_step": 11}, {"cell": "lstm"}, {"cell": "lstm", "learning_rate": 0.01}],
    "seq-transformer": [{}, {"window_step": 11}, {"epochs": 6}, {"n_layers": 1}],
}


def load_load() -> str:
    try:
        return "load average %.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        return "load average unknown"


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    print(text_table(header, rows))


def fit_model(name: str, train: Dataset, valid: Dataset | None = None, **hyper: Any) -> tuple[Any, float]:
    """A fitted model (popularity or a sequence model) and its fit seconds."""
    if name == "popularity":
        started = time.perf_counter()
        model = Popularity().fit(train)
        return model, time.perf_counter() - started
    model = create_model(name, device="cpu", **hyper)
    model.fit(train, valid=valid)
    return model, model.fit_seconds


def protocol_one(dataset: Dataset, models: Sequence[str]) -> None:
    split = split_by_user(dataset, 0.2, seed=42)
    print(f"\nProtocol 1 (classic next item): {dataset.name}, split_by_user seed 42, windows of 10 step 10, "
          f"{len(split.train)} training / {len(split.test)} test ratings")
    rows = []
    for name in ("popularity", *models):
        model, seconds = fit_model(name, split.train)
        result = evaluate_next_item(model, split)
        target = TARGETS.get(name)
        verdict = "" if target is None else f">={target:.3f} " + ("ok" if result["mrr"] >= target else "MISS")
        rows.append([name, f"{result['mrr']:.4f}", f"{result['hit@10']:.4f}", f"{result['ndcg@10']:.4f}",
                     f"{seconds:.1f}", verdict, ANCHORS.get(name, "")])
        print(f"  {name}: mrr {result['mrr']:.4f} ({seconds:.1f} s fit)", flush=True)
    print()
    print_table(["model", "MRR", "hit@10", "NDCG@10", "fit s", "target", "anchor"], rows)


def protocol_two(dataset: Dataset, models: Sequence[str], large_loss: str) -> None:
    split = split_leave_last_out(dataset)
    inner = split_leave_last_out(split.train)  # (fit, valid): the item before the test one validates
    print(f"\nProtocol 2 (leave last out): {dataset.name}, {dataset.n_items} items, {len(split.test)} test users")
    rows = []
    for name in ("popularity", *models):
        hyper = {}
        if name != "popularity" and dataset.n_items >= LARGE_CATALOGUE:
            hyper["loss"] = large_loss
        model, seconds = fit_model(name, inner.train, inner.test, **hyper)
        valid_mrr = model.history[-1].metrics.get("mrr") if getattr(model, "history", None) else None
        result = evaluate_last_item(model, split.train, split.test)
        rows.append([name, ",".join(f"{k}={v}" for k, v in hyper.items()), f"{result['hit@10']:.4f}",
                     f"{result['ndcg@10']:.4f}", f"{result['mrr']:.4f}",
                     "" if valid_mrr is None else f"{valid_mrr:.4f}", f"{seconds:.1f}"])
        print(f"  {name}: hit@10 {result['hit@10']:.4f} ({seconds:.1f} s fit)", flush=True)
    print()
    print_table(["model", "settings", "hit@10", "NDCG@10", "MRR", "valid MRR", "fit s"], rows)


def tune(dataset: Dataset, models: Sequence[str], grid: list[dict[str, Any]] | None = None) -> None:
    outer = split_by_user(dataset, 0.2, seed=42)
    inner = split_by_user(outer.train, 0.2, seed=7)  # validation users, all among the training users
    valid_split = Split("user", inner.train, inner.test)
    print(f"\nTuning on {dataset.name}: {len(inner.train)} fit / {len(inner.test)} validation ratings "
          f"(validation users drawn from the training users only)")
    for name in models:
        rows = []
        for hyper in TUNING_GRID[name] if grid is None else grid:
            model, seconds = fit_model(name, inner.train, **hyper)
            result = evaluate_next_item(model, valid_split)
            rows.append([str(hyper or "defaults"), f"{result['mrr']:.4f}", f"{result['hit@10']:.4f}", f"{seconds:.1f}"])
            print(f"  {name} {hyper or 'defaults'}: valid mrr {result['mrr']:.4f} ({seconds:.1f} s)", flush=True)
        print()
        print(name)
        print_table(["settings", "valid MRR", "valid hit@10", "fit s"], rows)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(SEQUENCE_MODELS), help="comma-separated sequence models")
    parser.add_argument("--datasets", default="ml-100k,ml-latest-small", help="datasets of protocol 2")
    parser.add_argument("--protocols", default="1,2", help="which protocols to run: 1, 2 or 1,2")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--large-catalogue-loss", default="sampled_softmax", choices=("softmax", "sampled_softmax"),
                        help=f"loss of the sequence models on catalogues of more than {AUTO_SOFTMAX_MAX_ITEMS} items")
    parser.add_argument("--tune", action="store_true", help="score the tuning grid on validation users instead")
    parser.add_argument("--grid", default=None, metavar="JSON",
                        help="with --tune: a JSON list of settings to try instead of TUNING_GRID (for every model given)")
    args = parser.parse_args(argv)

    from recengine.data.movielens import load_dataset

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(SEQUENCE_MODELS))
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {SEQUENCE_MODELS}")
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU; {load_load()} at start")
    if args.tune:
        tune(load_dataset("ml-100k"), models, None if args.grid is None else json.loads(args.grid))
    else:
        protocols = {p.strip() for p in args.protocols.split(",")}
        if "1" in protocols:
            protocol_one(load_dataset("ml-100k"), models)
        if "2" in protocols:
            for name in args.datasets.split(","):
                protocol_two(load_dataset(name.strip()), models, args.large_catalogue_loss)
    print(f"\n{load_load()} at the end")


if __name__ == "__main__":
    main()
