"""Training across processes and machines: the process group and the few collectives recengine uses.

Launch every rank with torchrun, which sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT:

    torchrun --nproc_per_node=2 -m recengine train --dataset ml-100k --model mf --distributed

`init_distributed` joins the group: backend "nccl" with one GPU per rank (`cuda:LOCAL_RANK`) when CUDA
is there and the device allows it, else "gloo" on the CPU. From then on the library notices by itself
(`is_distributed()`): `recengine.training.train_loop` wraps the module in DistributedDataParallel and
gives each rank its slice of every global batch, ALS solves each rank's share of the users and items,
and `ModelStore.train_distributed` lets rank 0 alone evaluate and write the artefact.

Helpers used by them:

* `shard_range(n, rank, world)`: the contiguous, balanced block of n rows a rank owns.
* `all_gather_rows(part, n)`: the blocks of every rank stacked back into the full (n, ...) tensor.
* `run_on_main(fn)`: run `fn` on rank 0 only (validation, progress, saving) and hand its JSON-able
  result to every rank, so all ranks take the same decision; when `fn` raises on rank 0 the other
  ranks raise `DistributedAbort` instead of waiting forever. Nothing is pickled: results travel as
  JSON bytes.

Everything here is a no-op (or the single-process answer) when no process group of more than one
rank is initialised, so a library call outside torchrun behaves exactly as before.
"""

from __future__ import annotations

import gc
import json
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, TypeVar

import torch
import torch.distributed as dist

from recengine.models.base import TrainingError, resolve_device

__all__ = [
    "BACKENDS",
    "DistributedAbort",
    "DistributedContext",
    "all_gather_rows",
    "all_reduce_sum",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "rank",
    "run_on_main",
    "shard_range",
    "shutdown",
    "world_size",
]

#: Process-group backends: gloo (CPU tensors, sparse all-reduce) and nccl (CUDA tensors, dense only).
BACKENDS = ("gloo", "nccl")
#: Environment variables torchrun sets for every worker.
_LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
#: How long a collective may wait for a slow rank (rank 0 evaluating a large model) before failing.
DEFAULT_TIMEOUT = timedelta(minutes=30)

T = TypeVar("T")


class DistributedAbort(TrainingError):
    """Raised on every other rank when rank 0 failed inside `run_on_main` (the message says why)."""


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the group: rank (0..world_size-1, global), local_rank (on its
    machine), world_size, the device it trains on and the backend."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        """True on rank 0, the one that reports progress, evaluates and writes artefacts."""
        return self.rank == 0


def _launch_environment() -> dict[str, str]:
    missing = [name for name in _LAUNCH_VARIABLES if name not in os.environ]
    if missing:
        raise RuntimeError(
            f"distributed training needs the launcher's environment variables {list(_LAUNCH_VARIABLES)}, "
            f"and {missing} are not set; start the command with torchrun, e.g. "
            "`torchrun --nproc_per_node=2 -m recengine train ... --distributed`"
        )
    return {name: os.environ[name] for name in _LAUNCH_VARIABLES}


def init_distributed(device: str | torch.device = "auto", backend: str | None = None) -> DistributedContext:
    """Join the process group torchrun prepared and return this rank's `DistributedContext`.

    device: "auto" (a GPU per rank when CUDA is available, else CPU), "cpu" or "cuda"; with CUDA each
        rank takes `cuda:LOCAL_RANK` (so --nproc_per_node should not exceed the GPUs per machine).
    backend: None picks "nccl" for CUDA and "gloo" for CPU; or one of BACKENDS.
    Calling it again in the same process returns the context of the group already joined.
    Raises RuntimeError outside torchrun (the launch variables are missing) and ValueError for an
    unknown backend or a GPU index this machine does not have.
    """
    environment = _launch_environment()
    local_rank = int(environment["LOCAL_RANK"])
    chosen = resolve_device(device)
    if chosen.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"rank with LOCAL_RANK={local_rank} needs GPU cuda:{local_rank}, but this machine has "
                f"{torch.cuda.device_count()}; start at most that many processes per node (--nproc_per_node)"
            )
        chosen = torch.device("cuda", local_rank)
        torch.cuda.set_device(chosen)
    if backend is None:
        backend = "nccl" if chosen.type == "cuda" else "gloo"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "nccl" and chosen.type != "cuda":
        raise ValueError("backend 'nccl' needs CUDA tensors; use backend 'gloo' to train on the CPU")
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=DEFAULT_TIMEOUT, device_id=chosen if chosen.type == "cuda" else None)
    return DistributedContext(dist.get_rank(), local_rank, dist.get_world_size(), chosen, dist.get_backend())


#: How long `shutdown` waits for the other ranks before leaving anyway.
SHUTDOWN_WAIT = timedelta(seconds=60)


def shutdown() -> None:
    """Leave the process group (no-op when none is initialised).

    Ranks leave together: first any DistributedDataParallel wrapper still waiting for the
    garbage collector is freed (its reducer must not outlive the group), then every rank waits
    for the others (at most `SHUTDOWN_WAIT`). A rank that tore its group down while a peer was
    still finishing died with "terminate called without an active exception" (SIGABRT)."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    gc.collect()
    try:
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=SHUTDOWN_WAIT)
        else:
            dist.barrier()
    except RuntimeError:  # a peer is gone (it failed or was stopped): leave without it
        pass
    dist.destroy_process_group()


def is_distributed() -> bool:
    """True when a process group with more than one rank is initialised (recengine then trains
    data-parallel); False for a plain single process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's global rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of ranks (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on rank 0 and in a single process."""
    return rank() == 0


def shard_range(n: int, rank: int, world: int) -> tuple[int, int]:
    """[start, stop) of the rows rank `rank` of `world` owns among n: contiguous blocks whose sizes
    differ by at most one, the larger ones first (the split of `torch.tensor_split`)."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank must be in 0..world-1 with world >= 1, got rank={rank}, world={world}")
    base, extra = divmod(int(n), world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def _collective_device() -> torch.device:
    """Where tensors for the group's collectives must live: the current GPU for nccl, else CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of `tensor` over every rank, in place (returned for chaining); unchanged in a single process."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_rows(part: torch.Tensor, n: int) -> torch.Tensor:
    """The full (n, ...) tensor from each rank's block `part` = rows `shard_range(n, rank, world)`.

    Blocks may differ in length by one; they are padded to the longest for the all-gather and
    trimmed after. Every rank gets the same result. In a single process `part` is returned.
    """
    if not is_distributed():
        return part
    world = dist.get_world_size()
    longest = shard_range(n, 0, world)[1]
    padded = part.new_zeros((longest, *part.shape[1:]))
    padded[: part.shape[0]] = part
    gathered = padded.new_empty((world * longest, *part.shape[1:]))
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor  # renamed in torch 2.13
    gather(gathered, padded)
    sizes = [stop - start for start, stop in (shard_range(n, r, world) for r in range(world))]
    return torch.cat([gathered[r * longest : r * longest + size] for r, size in enumerate(sizes)])


def _broadcast_bytes(payload: bytes | None) -> bytes:
    """Rank 0's bytes on every rank (length first, then the data as a uint8 tensor)."""
    device = _collective_device()
    size = torch.tensor([len(payload) if payload is not None else 0], dtype=torch.int64, device=device)
    dist.broadcast(size, src=0)
    data = torch.empty(int(size.item()), dtype=torch.uint8, device=device)
    if payload is not None:
        data.copy_(torch.frombuffer(bytearray(payload), dtype=torch.uint8))
    dist.broadcast(data, src=0)
    return data.cpu().numpy().tobytes()


def run_on_main(fn: Callable[[], T]) -> T:
    """Run `fn` on rank 0 only and return its result on every rank.

    The result must be JSON-able (numbers, strings, lists, dicts; None); it travels as JSON, so
    tuples come back as lists and dict keys as strings on the other ranks. When `fn` raises on
    rank 0 the exception propagates there and every other rank raises `DistributedAbort` with its
    message, so no rank is left waiting in a collective. In a single process this is `fn()`.
    """
    if not is_distributed():
        return fn()
    if dist.get_rank() == 0:
        try:
            result = fn()
        except BaseException as error:
            _broadcast_bytes(json.dumps({"error": f"{type(error).__name__}: {error}"}).encode())
            raise
        _broadcast_bytes(json.dumps({"result": result}, allow_nan=True).encode())
        return result
    message = json.loads(_broadcast_bytes(None).decode())
    if "error" in message:
        raise DistributedAbort(f"rank 0 stopped: {message['error']}")
    return message["result"]
