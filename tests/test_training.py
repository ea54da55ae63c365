"""The shared training loop: batches, schedules, early stopping, NaN handling, cancelling."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import pytest
import torch
from torch import nn

from recengine.models.base import EpochEvent, TrainingError
from recengine.training import (
    OPTIMIZERS,
    check_training_config,
    learning_rate_factor,
    make_optimizers,
    train_loop,
)


@dataclass(frozen=True)
class Config:
    epochs: int = 20
    batch_size: int = 16
    learning_rate: float = 0.05
    weight_decay: float = 0.0
    optimizer: str = "adam"
    schedule: str = "constant"
    early_stopping_patience: int = 0
    seed: int = 0


TRUE_WEIGHTS = torch.tensor([1.5, -2.0, 0.5])


def regression_problem(n: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(123)
    features = torch.randn(n, 3, generator=generator)
    return features, features @ TRUE_WEIGHTS + 0.3


def linear_model(seed: int = 0) -> nn.Linear:
    model = nn.Linear(3, 1)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, 3, generator=generator))
        model.bias.zero_()
    return model


def mse_loss(model: nn.Module):
    def loss_fn(batch: tuple[torch.Tensor, ...], target: torch.Tensor) -> torch.Tensor:
        return torch.mean((model(batch[0]).squeeze(1) - target) ** 2)

    return loss_fn


def fit(config: Config, **kwargs) -> tuple[nn.Linear, list[EpochEvent]]:
    features, targets = regression_problem()
    model = linear_model()
    events: list[EpochEvent] = []
    train_loop(model, (features,), targets, mse_loss(model), config, on_epoch=events.append, **kwargs)
    return model, events


def test_loss_decreases_and_weights_are_learned():
    model, events = fit(Config(schedule="one_cycle", batch_size=20, learning_rate=0.1))
    assert [e.epoch for e in events] == list(range(1, 21))
    assert all(e.epochs == 20 and e.seconds >= 0 for e in events)
    assert events[-1].loss < 1e-4 < 0.1 < events[0].loss
    assert torch.allclose(model.weight[0], TRUE_WEIGHTS, atol=0.01)
    assert float(model.bias.detach()) == pytest.approx(0.3, abs=0.01)
    assert not model.training  # left in eval mode


@pytest.mark.parametrize("optimizer", [o for o in OPTIMIZERS if o != "sparse_adam"])
def test_same_seed_gives_identical_weights(optimizer):
    config = Config(epochs=3, optimizer=optimizer, learning_rate=0.01)
    first, _ = fit(config)
    second, _ = fit(config)
    other, _ = fit(replace(config, seed=1))
    assert torch.equal(first.weight, second.weight) and torch.equal(first.bias, second.bias)
    assert not torch.equal(first.weight, other.weight)  # the batch order depends on the seed


def test_batches_cover_every_example_once_per_epoch():
    seen: list[torch.Tensor] = []
    features = torch.arange(10, dtype=torch.float32).unsqueeze(1)
    model = nn.Linear(1, 1)

    def loss_fn(batch, target):
        seen.append(batch[0][:, 0].clone())
        return torch.mean((model(batch[0]).squeeze(1) - target) ** 2)

    train_loop(model, (features,), features[:, 0], loss_fn, Config(epochs=2, batch_size=4))
    assert [len(b) for b in seen] == [4, 4, 2, 4, 4, 2]
    for epoch in (seen[:3], seen[3:]):
        assert sorted(torch.cat(epoch).tolist()) == list(range(10))
    assert torch.cat(seen[:3]).tolist() != torch.cat(seen[3:]).tolist()  # reshuffled


def test_early_stopping_restores_the_best_weights():
    scripted = iter([1.0, 0.5, 0.7, 0.8, 0.9, 0.95])
    snapshots: list[torch.Tensor] = []
    features, targets = regression_problem()
    model = linear_model()

    def record(event: EpochEvent) -> None:
        snapshots.append(model.weight.detach().clone())

    summary = train_loop(
        model, (features,), targets, mse_loss(model), Config(epochs=6, early_stopping_patience=2),
        on_epoch=record, validate=lambda: {"rmse": next(scripted)},
    )
    assert summary.epochs_run == 4 and summary.stopped_early
    assert summary.best_epoch == 2 and summary.best_value == 0.5
    assert len(snapshots) == 4
    assert not torch.equal(snapshots[1], snapshots[3])
    assert torch.equal(model.weight, snapshots[1])


def test_early_stopping_with_higher_is_better_monitor():
    scripted = iter([{"mrr": 0.1}, {"mrr": 0.3}, {"mrr": 0.2}, {"mrr": 0.25}])
    features, targets = regression_problem()
    model = linear_model()
    summary = train_loop(
        model, (features,), targets, mse_loss(model), Config(epochs=4, early_stopping_patience=1),
        validate=lambda: next(scripted), monitor="mrr", higher_is_better=True,
    )
    assert (summary.epochs_run, summary.best_epoch, summary.best_value) == (3, 2, 0.3)


def test_validation_metrics_reach_the_event():
    _, events = fit(Config(epochs=2), validate=lambda: {"rmse": 0.25, "mae": 0.2})
    assert events[0].metrics == {"rmse": 0.25, "mae": 0.2}
    assert events[0].to_dict()["rmse"] == 0.25


def test_missing_monitor_metric_is_an_error():
    with pytest.raises(ValueError, match="monitor 'rmse'"):
        fit(Config(epochs=1), validate=lambda: {"mae": 0.2})


def test_nan_loss_raises_training_error_suggesting_a_lower_learning_rate():
    with pytest.raises(TrainingError, match="lower learning_rate"):
        fit(Config(optimizer="sgd", learning_rate=1e6, epochs=5))


def test_callback_exception_cancels_training_and_propagates():
    class Cancelled(Exception):
        pass

    features, targets = regression_problem()
    model = linear_model()
    epochs_seen: list[int] = []

    def on_epoch(event: EpochEvent) -> None:
        epochs_seen.append(event.epoch)
        if event.epoch == 2:
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        train_loop(model, (features,), targets, mse_loss(model), Config(epochs=10), on_epoch=on_epoch)
    assert epochs_seen == [1, 2]
    assert not model.training


def test_sparse_adam_trains_sparse_embeddings():
    table = nn.Embedding(5, 1, sparse=True)
    offset = nn.Parameter(torch.zeros(()))
    module = nn.Module()
    module.table, module.offset = table, offset
    with torch.no_grad():
        table.weight.zero_()
    index = torch.arange(5).repeat(20)
    target = index.float() * 0.5 + 1.0

    def loss_fn(batch, y):
        return torch.mean((table(batch[0]).squeeze(1) + offset - y) ** 2)

    optimizers = make_optimizers(module, Config(optimizer="sparse_adam"))
    assert [type(o).__name__ for o in optimizers] == ["SparseAdam", "Adam"]
    train_loop(module, (index,), target, loss_fn, Config(optimizer="sparse_adam", epochs=60, batch_size=50, learning_rate=0.2))
    predicted = table.weight[:, 0] + offset
    assert torch.allclose(predicted, torch.arange(5) * 0.5 + 1.0, atol=0.05)


def test_mismatched_inputs_are_rejected():
    model = linear_model()
    with pytest.raises(ValueError, match="inputs\\[0\\] has 3 rows but targets has 4"):
        train_loop(model, (torch.zeros(3, 3),), torch.zeros(4), mse_loss(model), Config())


def test_learning_rate_schedules():
    assert learning_rate_factor("constant", 5, 10) == 1.0
    assert learning_rate_factor("cosine", 0, 11) == pytest.approx(1.0)
    assert learning_rate_factor("cosine", 5, 11) == pytest.approx(0.5)
    assert learning_rate_factor("cosine", 10, 11) == pytest.approx(0.0, abs=1e-12)
    total = 101  # progress = step / 100
    assert learning_rate_factor("one_cycle", 0, total) == pytest.approx(1 / 25)
    assert learning_rate_factor("one_cycle", 25, total) == pytest.approx(1.0)
    assert learning_rate_factor("one_cycle", 100, total) == pytest.approx(1 / 25e4)
    # halfway through each phase the cosine is halfway between its ends
    assert learning_rate_factor("one_cycle", 50, total) == pytest.approx(
        1 / 25e4 + (1 - 1 / 25e4) * 0.5 * (1 + math.cos(math.pi / 3))
    )
    factors = [learning_rate_factor("one_cycle", s, total) for s in range(total)]
    assert factors.index(max(factors)) == 25


@dataclass(frozen=True)
class ConfigWithBeta(Config):
    adam_beta2: float = 0.99


def test_optional_adam_beta2_reaches_the_optimiser():
    model = linear_model()
    [default] = make_optimizers(model, Config(optimizer="adamw"))
    [custom] = make_optimizers(model, ConfigWithBeta(optimizer="adamw"))
    assert default.param_groups[0]["betas"] == (0.9, 0.999)
    assert custom.param_groups[0]["betas"] == (0.9, 0.99)
    with pytest.raises(ValueError, match="adam_beta2 must be a number in \\[0, 1\\), got 1.0"):
        check_training_config(ConfigWithBeta(adam_beta2=1.0))


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"learning_rate": -1.0}, "learning_rate must be a finite number > 0"),
        ({"learning_rate": float("nan")}, "learning_rate must be a finite number > 0"),
        ({"weight_decay": -0.1}, "weight_decay must be"),
        ({"optimizer": "rmsprop"}, "optimizer must be one of"),
        ({"schedule": "step"}, "schedule must be one of"),
        ({"early_stopping_patience": -1}, "early_stopping_patience"),
        ({"epochs": 2.5}, "epochs must be an int"),
        ({"optimizer": "sparse_adam", "weight_decay": 0.1}, "has no weight decay"),
    ],
)
def test_training_config_validation(changes, message):
    with pytest.raises(ValueError, match=message):
        check_training_config(replace(Config(), **changes))


def test_cpu_batch_order_is_torch_randperm_of_a_seeded_cpu_generator():
    # The CPU path draws exactly what earlier releases drew (saved runs stay reproducible):
    # epoch e's order is the e-th torch.randperm of a CPU generator seeded with config.seed.
    seen: list[torch.Tensor] = []
    features = torch.arange(10, dtype=torch.float32).unsqueeze(1)
    model = nn.Linear(1, 1)

    def loss_fn(batch, target):
        seen.append(batch[0][:, 0].long().clone())
        return torch.mean((model(batch[0]).squeeze(1) - target) ** 2)

    train_loop(model, (features,), features[:, 0], loss_fn, Config(epochs=2, batch_size=10, seed=7))
    generator = torch.Generator().manual_seed(7)
    assert [s.tolist() for s in seen] == [torch.randperm(10, generator=generator).tolist() for _ in range(2)]


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sparse_adam"])
def test_adam_is_not_fused_on_cpu(optimizer):
    # fused=True only when every parameter is on CUDA; on CPU torch's default implementation stays.
    module = nn.Sequential(nn.Embedding(5, 2, sparse=optimizer == "sparse_adam"), nn.Linear(2, 1))
    for built in make_optimizers(module, Config(optimizer=optimizer)):
        assert not built.defaults.get("fused")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_adam_is_fused_on_cuda(optimizer):
    module = nn.Linear(3, 1).cuda()
    [built] = make_optimizers(module, Config(optimizer=optimizer))
    assert built.defaults["fused"] is True


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batch_order_is_drawn_on_the_device_and_seeded():
    def orders(seed: int) -> list[list[int]]:
        seen: list[list[int]] = []
        features = torch.arange(50, dtype=torch.float32, device="cuda").unsqueeze(1)
        model = nn.Linear(1, 1).cuda()

        def loss_fn(batch, target):
            seen.append(batch[0][:, 0].long().tolist())
            return torch.mean((model(batch[0]).squeeze(1) - target) ** 2)

        train_loop(model, (features,), features[:, 0], loss_fn, Config(epochs=2, batch_size=50, seed=seed))
        return seen

    first = orders(3)
    assert first == orders(3) and first != orders(4)
    assert all(sorted(order) == list(range(50)) for order in first)


def test_automatic_batch_size_is_allowed_only_when_asked_for():
    check_training_config(replace(Config(), batch_size=0), automatic_batch=True)
    with pytest.raises(ValueError, match=r"batch_size must be >= 0 \(0 = automatic\), got -1"):
        check_training_config(replace(Config(), batch_size=-1), automatic_batch=True)
