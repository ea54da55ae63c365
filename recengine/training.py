"""The training loop shared by the torch models (matrix factorisation, neural, sequence models).

A model owns its `nn.Module`, builds its input tensors once, and hands the loop a loss:

    train_loop(network, (users, items), ratings, loss_fn, config, on_epoch=record, validate=rmse_on_valid)

The loop draws shuffled index batches straight from the tensors (`torch.randperm` with a seeded
`torch.Generator`, on the device when training on CUDA: no DataLoader, no per-sample Python, no
host-to-device copy of the order), steps the optimiser and the learning-rate
schedule once per batch, validates once per epoch, stops early when the monitored metric stops
improving (and puts the best weights back), turns a NaN loss into a `TrainingError` saying what
to change, and reports an `EpochEvent` per epoch.

Training hyper-parameters live in each model's own frozen config; the loop reads these fields
(see `TrainingConfig`), and `check_training_config` validates them for the config's `__post_init__`.

Reproducibility: the batch order depends only on `config.seed` (and on the device type: CUDA
draws its own permutation from the same seed); a model that also initialises its
weights from a `torch.Generator` seeded with it gets identical weights for identical seeds on CPU.
Nothing global is seeded. (Dropout or other in-module randomness uses torch's global generator and
is not covered by this guarantee.)

Cancelling: an exception raised by `on_epoch` (or `validate`) propagates unchanged; the store uses
this to stop a run. The module is then left in eval mode with the weights of the last finished step.

Across processes (`recengine.distributed`; started by torchrun, a process group of more than one
rank initialised): nothing changes for the caller. The loop wraps a thin module whose forward *is*
`loss_fn` in DistributedDataParallel (so `loss_fn` keeps closing over the bare module and DDP still
sees every forward and averages every gradient; sparse embedding gradients too, with gloo). Every
rank walks the same seeded permutation and takes its own contiguous slice of each global batch of
`config.batch_size` (every rank makes the same number of steps, none waits on a last step), and
scales its loss by its share of the batch's loss terms (`loss_terms`), so the averaged gradient is
the gradient of the global batch's loss. Validation and `on_epoch` run on rank 0 only; the metrics
reach every rank, so early stopping takes the same decision everywhere, and an exception on rank 0
stops the other ranks with `DistributedAbort`. Result: the same as one process up to the float
rounding of the summation order. Tolerance, tested with 2 CPU processes (tests/test_distributed.py):
every score within 1e-4 and every epoch's loss within 1e-5 relative; measured 2e-6 and 1e-7 for mf,
neural and the sequence models after 2-3 epochs. (A parameter whose exact gradient is zero, like
the key bias of self-attention, may drift apart under Adam's normalisation without changing any
score.) In-module randomness (dropout) is drawn per slice, so runs with dropout agree in
distribution only.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Protocol, Sequence

import torch
from torch import nn

from recengine import distributed
from recengine.models.base import (
    MAX_BATCH_SIZE,
    MAX_EPOCHS,
    MAX_SEED,
    EpochCallback,
    EpochEvent,
    TrainingError,
    check_range,
)

__all__ = [
    "automatic_batch_size",
    "OPTIMIZERS",
    "SCHEDULES",
    "TrainingConfig",
    "TrainSummary",
    "check_training_config",
    "learning_rate_factor",
    "make_optimizers",
    "train_loop",
]

#: Optimisers the loop can build. "sparse_adam" uses `torch.optim.SparseAdam` for embeddings created
#: with `sparse=True` and Adam for every other parameter; it has no weight decay (regularise in the loss).
OPTIMIZERS = ("adam", "adamw", "sgd", "sparse_adam", "adagrad")
#: Learning-rate schedules, stepped once per batch. "one_cycle": warm up from lr/25 to lr over the first
#: 25% of steps, then cosine down to lr/25e4 (fastai/Leslie Smith); "cosine": cosine from lr to 0.
SCHEDULES = ("constant", "one_cycle", "cosine")

#: Adam's second-moment decay when a config has no `adam_beta2` field (torch's default).
DEFAULT_BETA2 = 0.999
#: One-cycle shape (same as fastai's `fit_one_cycle` defaults).
ONE_CYCLE_WARMUP = 0.25
ONE_CYCLE_DIV = 25.0
ONE_CYCLE_FINAL_DIV = 1e4


class TrainingConfig(Protocol):
    """The fields `train_loop` reads from a model's frozen config."""

    epochs: int  #: full passes over the training interactions
    batch_size: int  #: interactions per optimiser step
    learning_rate: float  #: peak learning rate (the schedule scales it)
    weight_decay: float  #: optimiser weight decay (decoupled for adamw, L2 for adam/sgd/adagrad)
    optimizer: str  #: one of OPTIMIZERS
    schedule: str  #: one of SCHEDULES
    early_stopping_patience: int  #: epochs without improvement before stopping; 0 = off
    seed: int  #: seeds the batch order (and, by convention, the model's initial weights)
    # Optional: `adam_beta2: float` (default 0.999), the second-moment decay of the Adam family.


@dataclass(frozen=True)
class TrainSummary:
    """What `train_loop` did: epochs run, and the best epoch (1-based) and value of the monitored
    metric (None without validation). `stopped_early` is True when patience ran out."""

    epochs_run: int
    best_epoch: int | None
    best_value: float | None
    stopped_early: bool


#: The automatic batch size (`batch_size=0`): never below the tuned 1024 ...
AUTO_MIN_BATCH = 1024
#: ... and otherwise the training ratings / this, i.e. at most this many steps per epoch.
AUTO_STEPS_PER_EPOCH = 100


def automatic_batch_size(n_ratings: int) -> int:
    """The batch size `batch_size=0` stands for: max(1024, n_ratings // 100).

    Every optimiser step costs O((n_users + n_items) * d) on top of its batch (the uniform L2
    reaches every factor row, and AdamW updates every row), so with a fixed batch an epoch costs
    (n_ratings / batch) * (n_users + n_items) * d, which grows faster than the ratings (exponent
    1.35 from 100k to 1M on synthetic MovieLens-shaped data). With at most 100 steps per epoch that
    part is 100 * (n_users + n_items) * d, below the batch part n_ratings * d from about 1M ratings
    on, and an epoch costs about linear in the ratings. Below 102,500 ratings (ml-100k,
    ml-latest-small: where the defaults were tuned) it is the tuned 1024. See recengine/models/mf.py's docstring
    for the accuracy measured against fixed batches. Shared by every model with `batch_size=0`
    (mf, neural).
    """
    if isinstance(n_ratings, bool) or not isinstance(n_ratings, int) or n_ratings < 0:
        raise ValueError(f"n_ratings must be an int >= 0, got {n_ratings!r}")
    return max(AUTO_MIN_BATCH, n_ratings // AUTO_STEPS_PER_EPOCH)


def check_training_config(config: TrainingConfig, automatic_batch: bool = False, max_batch_size: int = MAX_BATCH_SIZE) -> None:
    """Validate the training fields of a model config, lower and upper bounds included; ValueError
    naming the allowed values.

    automatic_batch: the model reads `batch_size=0` as "choose from the data" (and hands
    `train_loop` a config with the chosen size), so 0 is allowed too. max_batch_size: a model
    whose batch rows are costlier than one rating (e.g. whole windows scored against the
    catalogue) lowers it.
    """
    for name in ("epochs", "batch_size", "early_stopping_patience", "seed"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an int, got {value!r}")
    if config.epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {config.epochs}")
    if config.batch_size < (0 if automatic_batch else 1):
        allowed = ">= 0 (0 = automatic)" if automatic_batch else ">= 1"
        raise ValueError(f"batch_size must be {allowed}, got {config.batch_size}")
    if config.early_stopping_patience < 0:
        raise ValueError(f"early_stopping_patience must be >= 0 (0 turns it off), got {config.early_stopping_patience}")
    # Upper bounds, for every model: beyond them a run never ends or cannot be allocated.
    check_range("epochs", config.epochs, 1, MAX_EPOCHS)
    check_range("batch_size", config.batch_size, 0 if automatic_batch else 1, max_batch_size)
    check_range("early_stopping_patience", config.early_stopping_patience, 0, MAX_EPOCHS)
    check_range("seed", config.seed, 0, MAX_SEED)
    if not (isinstance(config.learning_rate, (int, float)) and math.isfinite(config.learning_rate) and config.learning_rate > 0):
        raise ValueError(f"learning_rate must be a finite number > 0, got {config.learning_rate!r}")
    if not (isinstance(config.weight_decay, (int, float)) and math.isfinite(config.weight_decay) and config.weight_decay >= 0):
        raise ValueError(f"weight_decay must be a finite number >= 0, got {config.weight_decay!r}")
    if config.optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {config.optimizer!r}")
    if config.schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {config.schedule!r}")
    beta2 = getattr(config, "adam_beta2", DEFAULT_BETA2)
    if not (isinstance(beta2, (int, float)) and 0 <= beta2 < 1):
        raise ValueError(f"adam_beta2 must be a number in [0, 1), got {beta2!r}")
    if config.optimizer == "sparse_adam" and config.weight_decay > 0:
        raise ValueError(
            f"optimizer 'sparse_adam' has no weight decay, got weight_decay={config.weight_decay}; "
            "set weight_decay=0 and use the model's regularisation, or choose 'adam'/'adamw'"
        )


def learning_rate_factor(schedule: str, step: int, total_steps: int) -> float:
    """Multiplier of the peak learning rate at optimiser step `step` (0-based) of `total_steps`."""
    if schedule == "constant" or total_steps <= 1:
        return 1.0
    progress = min(step / (total_steps - 1), 1.0)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "one_cycle":
        start, end = 1.0 / ONE_CYCLE_DIV, 1.0 / (ONE_CYCLE_DIV * ONE_CYCLE_FINAL_DIV)
        if progress < ONE_CYCLE_WARMUP:
            phase = progress / ONE_CYCLE_WARMUP
            return start + (1.0 - start) * 0.5 * (1.0 - math.cos(math.pi * phase))
        phase = (progress - ONE_CYCLE_WARMUP) / (1.0 - ONE_CYCLE_WARMUP)
        return end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * phase))
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")


def make_optimizers(module: nn.Module, config: TrainingConfig) -> list[torch.optim.Optimizer]:
    """The optimiser(s) for `module` (two for "sparse_adam": sparse embeddings, dense rest)."""
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{type(module).__name__} has no trainable parameters")
    lr, decay = config.learning_rate, config.weight_decay
    betas = (0.9, float(getattr(config, "adam_beta2", DEFAULT_BETA2)))
    if config.optimizer == "adam":
        return [torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=decay, **_fused(params))]
    if config.optimizer == "adamw":
        return [torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=decay, **_fused(params))]
    if config.optimizer == "sgd":
        return [torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=decay)]
    if config.optimizer == "adagrad":
        return [torch.optim.Adagrad(params, lr=lr, weight_decay=decay)]
    if config.optimizer == "sparse_adam":
        sparse_ids = {id(m.weight) for m in module.modules() if isinstance(m, nn.Embedding) and m.sparse}
        sparse = [p for p in params if id(p) in sparse_ids]
        dense = [p for p in params if id(p) not in sparse_ids]
        optimizers: list[torch.optim.Optimizer] = []
        if sparse:
            optimizers.append(torch.optim.SparseAdam(sparse, lr=lr, betas=betas))
        if dense:
            optimizers.append(torch.optim.Adam(dense, lr=lr, betas=betas, **_fused(dense)))
        return optimizers
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {config.optimizer!r}")


def _fused(params: Sequence[torch.Tensor]) -> dict[str, bool]:
    """`{"fused": True}` (one kernel for the whole Adam/AdamW update) when every parameter is on a
    CUDA device, else `{}`: the CPU path keeps torch's default (foreach) implementation, and with it
    results identical to earlier releases."""
    return {"fused": True} if params and all(p.is_cuda for p in params) else {}


def _permutation_generator(seed: int, device: torch.device) -> torch.Generator:
    """The seeded generator of the batch order: on the training device when it is a CUDA device
    (the permutation is then drawn there; no n-element host permutation and copy per epoch), else
    on the CPU. Every rank of a distributed run seeds it alike, so all draw the same permutation."""
    return torch.Generator(device=device if device.type == "cuda" else "cpu").manual_seed(seed)


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in module.state_dict().items()}


LossFunction = Callable[[tuple[torch.Tensor, ...], torch.Tensor], torch.Tensor]


class _LossModule(nn.Module):
    """`module` with `loss_fn` as its forward, so DistributedDataParallel sees the loss computation
    (and registers the module's parameters) while `loss_fn` keeps using the bare module."""

    def __init__(self, module: nn.Module, loss_fn: LossFunction) -> None:
        super().__init__()
        self.module = module
        self.loss_fn = loss_fn

    def forward(self, batch: tuple[torch.Tensor, ...], target: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(batch, target)


def _data_parallel(module: nn.Module, loss_fn: LossFunction, device: torch.device) -> nn.Module:
    """DistributedDataParallel over `module` whose forward computes `loss_fn` (see `_LossModule`)."""
    from torch.nn.parallel import DistributedDataParallel

    sparse = any(isinstance(m, nn.Embedding) and m.sparse for m in module.modules())
    if sparse and torch.distributed.get_backend() == "nccl":
        raise ValueError(
            "sparse embedding gradients (optimizer 'sparse_adam') cannot be all-reduced by the nccl backend; "
            "train with optimizer 'adam' or 'adamw' across GPUs, or use the gloo backend"
        )
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(_LossModule(module, loss_fn), device_ids=device_ids)


def train_loop(
    module: nn.Module,
    inputs: Sequence[torch.Tensor],
    targets: torch.Tensor,
    loss_fn: LossFunction,
    config: TrainingConfig,
    on_epoch: EpochCallback | None = None,
    validate: Callable[[], Mapping[str, float]] | None = None,
    monitor: str = "rmse",
    higher_is_better: bool = False,
    loss_terms: Callable[[tuple[torch.Tensor, ...], torch.Tensor], torch.Tensor | int] | None = None,
) -> TrainSummary:
    """Train `module` in place with shuffled mini-batches drawn straight from tensors.

    inputs: tensors of equal first dimension n (e.g. users int64 (n,), items int64 (n,)), already on
        the module's device; targets: (n,) or (n, ...) on the same device.
    loss_fn(batch_inputs, batch_targets) -> scalar tensor: the batch loss including any per-batch
        regularisation; it closes over `module` (called in train mode, with gradients enabled).
    validate() -> {metric: value}: called once per epoch in eval mode under `torch.no_grad()`; its
        figures go into the epoch's `EpochEvent.metrics`.
    monitor / higher_is_better: the metric watched for early stopping (ValueError if `validate`
        does not return it). With `config.early_stopping_patience > 0` and `validate` given,
        training stops after that many epochs without improvement and the weights of the best
        epoch are restored; without `validate` early stopping is off.
    loss_terms(batch_inputs, batch_targets) -> count: how many terms `loss_fn` averages over for
        a batch (default: its rows). Used only across processes, to weight each rank's slice of a
        global batch; a loss that averages over something else (e.g. the non-padding targets of
        token windows) passes it so the distributed result matches one process.

    Across processes (see the module docstring) `validate` and `on_epoch` run on rank 0 only.

    Raises TrainingError when the loss becomes NaN or infinite. Exceptions from `on_epoch` or
    `validate` propagate unchanged (that is how a run is cancelled).
    """
    n = int(targets.shape[0])
    if n == 0:
        raise ValueError("train_loop needs at least one training example, got 0")
    for position, tensor in enumerate(inputs):
        if int(tensor.shape[0]) != n:
            raise ValueError(f"inputs[{position}] has {tensor.shape[0]} rows but targets has {n}; they must match")
    device = targets.device
    batch_size = min(config.batch_size, n)
    steps_per_epoch = math.ceil(n / batch_size)
    total_steps = steps_per_epoch * config.epochs
    optimizers = make_optimizers(module, config)
    generator = _permutation_generator(config.seed, device)
    patience = config.early_stopping_patience if validate is not None else 0
    parallel = _data_parallel(module, loss_fn, device) if distributed.is_distributed() else None

    best_value: float | None = None
    best_epoch: int | None = None
    best_state: dict[str, torch.Tensor] | None = None
    stale_epochs = 0
    step = 0
    epoch = 0
    stopped_early = False
    try:
        for epoch in range(1, config.epochs + 1):
            started = time.perf_counter()
            module.train()
            order = torch.randperm(n, generator=generator, device=generator.device).to(device)
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            for start in range(0, n, batch_size):
                index = order[start : start + batch_size]
                factor = learning_rate_factor(config.schedule, step, total_steps)
                for optimizer in optimizers:
                    for group in optimizer.param_groups:
                        group["lr"] = config.learning_rate * factor
                    optimizer.zero_grad(set_to_none=True)
                if parallel is None:
                    loss = loss_fn(tuple(tensor[index] for tensor in inputs), targets[index])
                    loss.backward()
                    loss_sum += loss.detach().double() * index.numel()
                else:
                    loss_sum += _parallel_step(parallel, inputs, targets, index, loss_terms)
                for optimizer in optimizers:
                    optimizer.step()
                step += 1
            if parallel is not None:
                distributed.all_reduce_sum(loss_sum)
            mean_loss = float(loss_sum) / n
            if not math.isfinite(mean_loss):
                raise TrainingError(
                    f"training loss became {mean_loss} in epoch {epoch} of {config.epochs} "
                    f"(learning_rate={config.learning_rate}, optimizer={config.optimizer!r}); "
                    f"lower learning_rate (try {config.learning_rate / 10:g}) or increase regularisation"
                )
            metrics: dict[str, float] = {}
            if validate is not None:
                module.eval()

                def run_validation() -> dict[str, float]:
                    with torch.no_grad():
                        return {key: float(value) for key, value in validate().items()}

                metrics = distributed.run_on_main(run_validation)
                if monitor not in metrics:
                    raise ValueError(f"monitor {monitor!r} is not among the validation metrics {sorted(metrics)}")
                value = metrics[monitor]
                improved = best_value is None or (value > best_value if higher_is_better else value < best_value)
                if improved:
                    best_value, best_epoch, stale_epochs = value, epoch, 0
                    if patience:
                        best_state = _snapshot(module)
                else:
                    stale_epochs += 1
            if on_epoch is not None:
                event = EpochEvent(epoch, config.epochs, mean_loss, time.perf_counter() - started, metrics)

                def report() -> None:
                    on_epoch(event)

                distributed.run_on_main(report)  # rank 0 only; a cancel there stops every rank
            if patience and stale_epochs >= patience:
                stopped_early = epoch < config.epochs
                break
        if best_state is not None and best_epoch != epoch:
            module.load_state_dict(best_state)
    finally:
        module.eval()
    return TrainSummary(epoch, best_epoch, best_value, stopped_early)


def _parallel_step(
    parallel: nn.Module,
    inputs: Sequence[torch.Tensor],
    targets: torch.Tensor,
    index: torch.Tensor,
    loss_terms: Callable[[tuple[torch.Tensor, ...], torch.Tensor], torch.Tensor | int] | None,
) -> torch.Tensor:
    """Forward and backward of this rank's slice of the global batch `index`; returns its part of
    the batch's loss x batch size (float64, summed over ranks at the end of the epoch).

    With w_r the loss terms in rank r's slice and w = Σ_r w_r those of the whole batch, rank r
    back-propagates loss_r · W · w_r / w; DDP averages over the W ranks, which leaves the gradient of
    Σ_r (w_r / w) loss_r, the loss of the whole batch. A rank whose slice is empty (a last batch
    smaller than the world) still takes part in DDP's all-reduce with one example at weight 0.
    """
    world, rank = distributed.world_size(), distributed.rank()
    start, stop = distributed.shard_range(index.numel(), rank, world)
    local = index[start:stop] if stop > start else index[:1]
    batch, target = tuple(tensor[local] for tensor in inputs), targets[local]
    if stop == start:
        share: torch.Tensor | float = 0.0
    elif loss_terms is None:  # the loss is a mean over rows
        share = (stop - start) / index.numel()
    else:
        share = loss_terms(batch, target) / loss_terms(tuple(tensor[index] for tensor in inputs), targets[index])
    loss = parallel(batch, target)
    (loss * (share * world)).backward()
    return loss.detach().double() * share * index.numel()
