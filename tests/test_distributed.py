"""Training across processes: sharding helpers, then real 2-process runs under torchrun (gloo, CPU).

The multi-process checks start torchrun twice: once with this file as the worker script (every
model family trained by two ranks, compared here with the same fit in one process), and once as
the command line `torchrun -m recengine train --distributed`. Children get one thread each and a
hard timeout, so a hang fails the test instead of blocking CI.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from recengine import distributed
from recengine.data.splits import Split, make_split
from recengine.data.synthetic import generate_synthetic
from recengine.models.als import ALSConfig, _build_sides, solve_cg, solve_cholesky
from recengine.models.base import Recommender, create_model
from recengine.store import ModelStore

REPO = Path(__file__).resolve().parents[1]
WORLD = 2
#: Seconds a torchrun launch may take before it counts as hung (normally 10-20 s on 2 busy cores).
LAUNCH_TIMEOUT = 240
#: Largest difference allowed between the scores of a 2-process and a 1-process fit (measured:
#: about 1e-7 for mf and the sequence models, 1e-5 for ALS with CG; the cause is the summation
#: order of float32 reductions).
SCORE_ATOL = 1e-4

#: name -> (model family, hyper-parameters); "ragged" gets batch_size = n_train - 1 so that the
#: last batch of each epoch holds one row and one rank has nothing of it.
CASES: dict[str, tuple[str, dict]] = {
    "mf-early-stopping": ("mf", dict(embedding_dim=8, epochs=4, batch_size=128, early_stopping_patience=1,
                                     learning_rate=0.1, schedule="constant", reg_factors=0.0, reg_uniform=0.0)),
    "mf-sparse-adam": ("mf", dict(embedding_dim=8, epochs=2, batch_size=128, optimizer="sparse_adam", reg_uniform=0.0)),
    "mf-ragged": ("mf", dict(embedding_dim=4, epochs=2)),
    "seq-pooling": ("seq-pooling", dict(embedding_dim=8, epochs=2, batch_size=16)),
    "seq-transformer": ("seq-transformer", dict(embedding_dim=8, epochs=2, batch_size=16, dropout=0.0,
                                                loss="sampled_softmax", n_negatives=16)),
    "als-cg": ("als", dict(factors=8, iterations=4, regularization=1.0)),
    "als-cholesky": ("als", dict(factors=8, iterations=2, regularization=1.0, solver="cholesky")),
}


@functools.cache
def tiny_split() -> Split:
    """61 users x 43 items x 1500 ratings (odd sizes: the ranks' blocks differ in length)."""
    data = generate_synthetic(n_users=61, n_items=43, n_interactions=1500, seed=3, sequential=True)
    return make_split(data, "random", 0)


def fit_case(name: str, split: Split, on_epoch=None) -> Recommender:
    family, hyper = CASES[name]
    if name == "mf-ragged":
        hyper = {**hyper, "batch_size": len(split.train) - 1}
    return create_model(family, device="cpu", **hyper).fit(split.train, valid=split.test, on_epoch=on_epoch)


def _launch(arguments: list[str], env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    """torchrun with WORLD CPU processes on localhost (a free port), killed as a group on timeout."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "RECENGINE_DEVICE": "cpu",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])), **env_extra}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}", *arguments]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=LAUNCH_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"torchrun did not finish within {LAUNCH_TIMEOUT}s (a rank hung?)\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


# --- helpers, in one process ------------------------------------------------------------------------
@pytest.mark.parametrize("n, world", [(0, 1), (1, 2), (7, 2), (10, 3), (43, 2), (5, 8)])
def test_shard_range_gives_balanced_contiguous_blocks(n: int, world: int) -> None:
    blocks = [distributed.shard_range(n, rank, world) for rank in range(world)]
    sizes = [stop - start for start, stop in blocks]
    assert blocks[0][0] == 0 and blocks[-1][1] == n
    assert all(blocks[r][1] == blocks[r + 1][0] for r in range(world - 1))
    assert max(sizes) - min(sizes) <= 1
    assert sizes == [len(part) for part in torch.tensor_split(torch.arange(n), world)]


def test_shard_range_rejects_a_rank_outside_the_world() -> None:
    with pytest.raises(ValueError, match="rank must be in 0..world-1"):
        distributed.shard_range(10, 2, 2)


def test_without_a_process_group_everything_is_the_single_process_answer() -> None:
    assert not distributed.is_distributed()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main_process()) == (0, 1, True)
    part = torch.arange(6.0).reshape(3, 2)
    assert distributed.all_gather_rows(part, 3) is part
    assert distributed.run_on_main(lambda: {"rmse": 0.5}) == {"rmse": 0.5}


def test_init_outside_torchrun_says_how_to_launch(monkeypatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="torchrun --nproc_per_node"):
        distributed.init_distributed("cpu")


def test_cli_distributed_without_torchrun_is_a_usage_error(monkeypatch, capsys) -> None:
    from recengine.cli import main

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert main(["train", "--dataset", "synthetic", "--distributed", "--device", "cpu"]) == 2
    assert "start the command with torchrun" in capsys.readouterr().err


def test_als_blocks_of_rows_solve_like_the_whole() -> None:
    """What each rank does: solving a block of rows (`_Side.rows`) with a given Gram matrix gives
    those rows of the whole solve."""
    train = tiny_split().train
    config = ALSConfig(factors=6, regularization=1.0)
    users, _ = _build_sides(train, config, torch.device("cpu"))
    fixed = torch.randn(train.n_items, 6, generator=torch.Generator().manual_seed(0))
    start_x = torch.randn(train.n_users, 6, generator=torch.Generator().manual_seed(1))
    gram = fixed.T @ fixed + torch.eye(6)
    whole_cg, whole_exact = solve_cg(users, fixed, start_x, 1.0, 3), solve_cholesky(users, fixed, 1.0)
    for start, stop in (distributed.shard_range(users.n_rows, rank, 3) for rank in range(3)):
        block = users.rows(start, stop)
        assert block.n_rows == stop - start
        torch.testing.assert_close(solve_cg(block, fixed, start_x[start:stop], 1.0, 3, gram=gram), whole_cg[start:stop],
                                   rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(solve_cholesky(block, fixed, 1.0, gram=gram.double()), whole_exact[start:stop],
                                   rtol=1e-5, atol=1e-6)


# --- two processes ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_process_fits(tmp_path_factory) -> Path:
    """Every case trained by 2 ranks (this file as the torchrun script); the folder of their artefacts."""
    out = tmp_path_factory.mktemp("distributed-fits")
    result = _launch([str(Path(__file__).resolve()), str(out)], {})
    assert result.returncode == 0, result.stderr[-4000:]
    return out


@pytest.mark.parametrize("name", sorted(CASES))
def test_two_processes_train_the_same_model_as_one(two_process_fits: Path, name: str) -> None:
    split = tiny_split()
    single = fit_case(name, split)
    users = np.arange(split.train.n_users)
    expected = single.score_users(users)
    ranks = [Recommender.load(two_process_fits / f"{name}-rank{rank}", device="cpu") for rank in range(WORLD)]
    for model in ranks:  # every rank ends with the same weights, and they are one process's weights
        torch.testing.assert_close(model.score_users(users), ranks[0].score_users(users), rtol=0, atol=0)
        torch.testing.assert_close(model.score_users(users), expected, rtol=0, atol=SCORE_ATOL)
    reported = ranks[0].history  # rank 0 reports: same epochs, losses and validation figures
    assert [event.epoch for event in reported] == [event.epoch for event in single.history]
    np.testing.assert_allclose([e.loss for e in reported], [e.loss for e in single.history], rtol=1e-5)
    for got, want in zip(reported, single.history):
        assert set(got.metrics) == set(want.metrics)
        np.testing.assert_allclose([got.metrics[k] for k in want.metrics], list(want.metrics.values()), rtol=1e-4)
    assert ranks[1].history == []  # the other ranks report nothing


def test_early_stopping_decision_is_shared() -> None:
    """The early-stopping case really stops early and restores the best epoch; that both ranks then
    hold one process's weights (above) shows they took the same decisions."""
    single = fit_case("mf-early-stopping", tiny_split())
    rmse = [event.metrics["rmse"] for event in single.history]
    assert len(rmse) < CASES["mf-early-stopping"][1]["epochs"]
    assert rmse[-1] > min(rmse)


def test_a_cancel_on_rank_0_stops_every_rank(two_process_fits: Path) -> None:
    outcomes = [json.loads((two_process_fits / f"cancel-rank{rank}.json").read_text()) for rank in range(WORLD)]
    assert outcomes[0] == {"error": "RuntimeError", "message": "cancelled by the test"}
    assert outcomes[1]["error"] == "DistributedAbort"
    assert "rank 0 stopped: RuntimeError: cancelled by the test" in outcomes[1]["message"]


def test_torchrun_cli_trains_like_one_process_and_only_rank_0_saves(tmp_path: Path) -> None:
    models = tmp_path / "models"
    result = _launch(["-m", "recengine", "train", "--dataset", "synthetic", "--model", "mf", "--set", "epochs=1",
                      "--set", "embedding_dim=8", "--device", "cpu", "--distributed", "--json"],
                     {"RECENGINE_MODELS_DIR": str(models)})
    assert result.returncode == 0, result.stderr[-4000:]
    payload = json.loads(result.stdout)  # one JSON document: rank 1 printed nothing
    assert result.stderr.count("epoch 1/1") == 1  # progress from rank 0 only
    folders = [path for path in models.iterdir() if not path.name.startswith(".")]
    assert len(folders) == 1
    meta = json.loads((folders[0] / "meta.json").read_text())
    assert meta["world_size"] == WORLD

    store = ModelStore(tmp_path / "single", device="cpu")
    key = store.key("synthetic", "mf", hyper={"epochs": 1, "embedding_dim": 8})
    assert folders[0].name == key.slug
    store.get_or_train(key)
    single = store.metrics(key)
    assert set(single) <= set(payload)
    for metric, value in single.items():
        assert payload[metric] == pytest.approx(value, abs=1e-3), metric


# --- the worker: `torchrun --nproc_per_node=2 tests/test_distributed.py OUT` -------------------------
def _worker(out: Path) -> None:
    torch.set_num_threads(1)
    context = distributed.init_distributed("cpu")
    try:
        split = tiny_split()
        for name in CASES:
            model = fit_case(name, split)
            model.save(out / f"{name}-rank{context.rank}")

        def cancel(event) -> None:
            raise RuntimeError("cancelled by the test")

        try:
            fit_case("seq-pooling", split, on_epoch=cancel)
            outcome = {"error": None}
        except Exception as error:  # noqa: BLE001 - the test reads what each rank saw
            outcome = {"error": type(error).__name__, "message": str(error)}
        (out / f"cancel-rank{context.rank}.json").write_text(json.dumps(outcome))
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
