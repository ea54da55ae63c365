"""The model store: cache keys, atomic save, safe load, one trainer per key, background training.

A trained model is identified by a `ModelKey`: the dataset, the split and its seed, the model
family and its hyper-parameter dataclass. `ModelStore.get_or_train(key)` returns the model from
memory, else loads the artefact folder `<root>/<key.slug>`, else trains it, evaluates it on
the split's test part and saves it atomically (`Recommender.save`). Everything that is loaded
or trained stays in memory for the life of the process and is shared read-only.

Single flight: a per-key lock makes concurrent requests for the same key wait for the one
training; across processes a lock file (`<root>/.locks/<slug>.lock`, `fcntl.flock`) does the
same, and a waiter re-reads the folder the winner wrote.

Damage: a folder that fails `Recommender.load` (missing file, checksum mismatch, other format)
or does not describe the key is reported with `warnings.warn` (and the `recengine.store`
logger) and treated as missing: it is retrained and replaced, never loaded half-way. A store
starting up removes the hidden leftovers of saves killed half-way that are over an hour old
(`sweep_leftovers`).

Uploads: an uploaded dataset can be replaced under the same name (`import --force`), so its keys
carry a `data_version` (the data file's checksum from the upload manifest) and a model of the
old ratings is never reused; MovieLens releases and "synthetic" have none, so their folder
names do not change.

Validation data during training (what `fit(train, valid=...)` receives):

- when the model's config has no `early_stopping_patience` or it is 0, `valid` is the split's
  **test** part: its figures only draw the per-epoch monitoring curves, nothing is selected on it;
- when `early_stopping_patience > 0`, early stopping *selects* the epoch, so `valid` is a 10%
  part carved from the **train** part (`split_validation`, seeded with the key's seed) and the
  model is fitted on the remaining 90%; the test part then selects nothing and its metrics
  stay honest. (Recommendations from such a model exclude only the 90% it was fitted on.)

Metrics (`evaluate_model(model, split.train, split.test, k=10)`) are written to the artefact's
meta.json with the dataset, split, seed, model, config, device and timings.

Background training (`start_training`) runs `get_or_train` in a daemon thread owned by the
store and exposes its progress as a `TrainingJob` the app's training monitor polls.

Across processes (torchrun, `recengine.distributed`), every rank calls `train_distributed(key)`:
rank 0 decides whether the key needs training, every rank fits its share, and rank 0 alone
evaluates and writes the artefact while the others wait for it and return None.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Mapping

import numpy as np
import torch

import recengine
from recengine import distributed
from recengine.data import movielens
from recengine.data.dataset import Dataset
from recengine.data.splits import SPLIT_NAMES, Split, make_split, split_validation
from recengine.evaluation import evaluate_model
from recengine.models.base import (
    ARTEFACT_FORMAT,
    ArtefactError,
    EpochCallback,
    EpochEvent,
    Recommender,
    clip_repr,
    config_from_dict,
    create_model,
    describe_device,
    get_model_class,
    resolve_device,
)

try:  # POSIX only; elsewhere the store is single-flight within the process only
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "MODELS_DIR_ENV",
    "STALE_STAGING_SECONDS",
    "VALIDATION_FRACTION",
    "ArtefactInfo",
    "ModelKey",
    "ModelStore",
    "TrainingCancelled",
    "TrainingJob",
    "default_store",
    "sweep_leftovers",
]

logger = logging.getLogger(__name__)

#: Environment variable naming the folder of trained artefacts (default `<repo>/models`).
MODELS_DIR_ENV = "RECENGINE_MODELS_DIR"
#: Share of the train part held out for early stopping when a config asks for it.
VALIDATION_FRACTION = 0.1
#: k of the ranking metrics written to meta.json.
EVALUATION_K = 10

#: Hidden leftovers of saves or deletes killed half-way (`.<slug>.<suffix>` folders) older than
#: this are removed when a store starts; younger ones may belong to a save still running.
STALE_STAGING_SECONDS = 3600.0

JobState = Literal["queued", "running", "done", "failed", "cancelled"]
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: `.<slug>.<suffix>`: a staging folder of `Recommender.save` (random suffix), the previous folder
#: it moves aside (`old-<pid>-<ns>`) or a folder `delete` moved aside (`deleted-<pid>-<ns>`).
_LEFTOVER = re.compile(r"\.[A-Za-z0-9._-]+__[A-Za-z0-9._-]+-s\d+__[A-Za-z0-9._-]+__[0-9a-f]{10}\.[A-Za-z0-9_-]+")


class TrainingCancelled(Exception):
    """Raised from the epoch callback of a cancelled `TrainingJob` to stop `fit` at an epoch boundary."""


# --- keys -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelKey:
    """What identifies a trained model: dataset, split and its seed, model family, hyper-parameters.

    `config` is the model's frozen Config dataclass (hashable, compared by value). `data_version`
    fingerprints the dataset's content where a name may be reused for other data (an upload
    replaced with `import --force`: the first 16 hex digits of its data file's SHA-256); it is ""
    for MovieLens releases and "synthetic", whose content a name fixes. Build keys with
    `ModelStore.key(...)`, which validates every part.
    """

    dataset: str
    split: str
    seed: int
    model: str
    config: Any
    data_version: str = ""

    def __post_init__(self) -> None:
        for label in ("dataset", "split", "model"):
            value = getattr(self, label)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"ModelKey.{label} must be a non-empty string, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"ModelKey.seed must be an int >= 0, got {clip_repr(self.seed)}")
        if not isinstance(self.data_version, str):
            raise ValueError(f"ModelKey.data_version must be a string, got {clip_repr(self.data_version)}")
        if not dataclasses.is_dataclass(self.config) or isinstance(self.config, type):
            raise ValueError(f"ModelKey.config must be a model Config dataclass instance, got {self.config!r}")

    def config_dict(self) -> dict[str, Any]:
        """The hyper-parameters as a plain dict (JSON-ready)."""
        return dataclasses.asdict(self.config)

    @property
    def digest(self) -> str:
        """10 hex characters of sha256 over the config values (sorted JSON), the code version
        (`recengine.__version__` and `ARTEFACT_FORMAT`: a new version never reads old folders) and
        the `data_version` when there is one (so keys without one keep their digest)."""
        parts: dict[str, Any] = {"config": self.config_dict(), "recengine": recengine.__version__, "format": ARTEFACT_FORMAT}
        if self.data_version:
            parts["data"] = self.data_version
        payload = json.dumps(parts, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:10]

    @property
    def slug(self) -> str:
        """Readable folder name: `ml-100k__random-s42__mf__1a2b3c4d5e`."""
        dataset, split, model = (_UNSAFE.sub("-", part) for part in (self.dataset, self.split, self.model))
        return f"{dataset}__{split}-s{self.seed}__{model}__{self.digest}"

    def describe(self) -> str:
        """A short human label: "mf on ml-100k (random split, seed 42)"."""
        return f"{self.model} on {self.dataset} ({self.split} split, seed {self.seed})"


@dataclass(frozen=True)
class ArtefactInfo:
    """One saved model folder, as read from its meta.json (for the table of past runs)."""

    slug: str
    path: Path
    dataset: str
    split: str
    seed: int
    model: str
    config: dict[str, Any]
    metrics: dict[str, float]
    fit_seconds: float
    size_bytes: int
    saved_at: str
    loaded: bool
    device: str = ""


# --- background jobs ----------------------------------------------------------------------------
class TrainingJob:
    """A background training run of one key (created by `ModelStore.start_training`).

    Read from any thread: `state` ("queued" | "running" | "done" | "failed" | "cancelled"),
    `events` (append-only list of `EpochEvent`; iterate over a `list(job.events)` copy),
    `started_at` / `finished_at` (time.time() or None), `elapsed`, `eta_seconds`, `progress`,
    `model` and `metrics` once done, `error` (a message) once failed. `cancel()` asks the run to
    stop at the next epoch boundary; `wait(timeout)` blocks until the job has finished.
    """

    def __init__(self, key: ModelKey) -> None:
        self.key = key
        self.events: list[EpochEvent] = []
        self.created_at: float = time.time()
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.model: Recommender | None = None
        self.metrics: dict[str, float] | None = None
        self.error: str | None = None
        self._state: JobState = "queued"
        self._cancel = threading.Event()
        self._finished = threading.Event()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<TrainingJob {self.key.slug} {self.state} {len(self.events)} epochs>"

    @property
    def state(self) -> JobState:
        return self._state

    @property
    def finished(self) -> bool:
        """True once the job is done, failed or cancelled."""
        return self._finished.is_set()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    @property
    def elapsed(self) -> float:
        """Seconds since the run started (until it finished); 0 while queued."""
        if self.started_at is None:
            return 0.0
        end = self.finished_at if self.finished_at is not None else time.time()
        return max(0.0, end - self.started_at)

    @property
    def eta_seconds(self) -> float | None:
        """Estimated seconds left: mean epoch time x epochs still to run (None before the first
        epoch; 0 once finished). An upper bound when early stopping ends the run sooner."""
        if self.finished:
            return 0.0
        events = list(self.events)
        if not events:
            return None
        mean_epoch = sum(event.seconds for event in events) / len(events)
        return mean_epoch * max(0, events[-1].epochs - events[-1].epoch)

    @property
    def progress(self) -> float:
        """Share of epochs finished, 0..1 (1 once done)."""
        if self._state == "done":
            return 1.0
        events = list(self.events)
        if not events or events[-1].epochs <= 0:
            return 0.0
        return min(1.0, events[-1].epoch / events[-1].epochs)

    def cancel(self) -> None:
        """Ask the run to stop: the next epoch callback raises `TrainingCancelled` (a queued job
        never starts). Nothing is saved for a cancelled run."""
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job has finished (or `timeout` seconds passed); True when finished."""
        return self._finished.wait(timeout)

    # --- used by the store's worker thread ------------------------------------------------------
    def _on_epoch(self, event: EpochEvent) -> None:
        self.events.append(event)
        if self._cancel.is_set():
            raise TrainingCancelled(f"training of {self.key.describe()} was cancelled after epoch {event.epoch}")

    def _set_state(self, state: JobState) -> None:
        with self._lock:
            self._state = state
            if state == "running" and self.started_at is None:
                self.started_at = time.time()
            if state in ("done", "failed", "cancelled"):
                if self.started_at is None:
                    self.started_at = time.time()
                self.finished_at = time.time()
        if state in ("done", "failed", "cancelled"):
            self._finished.set()


# --- the store ----------------------------------------------------------------------------------
DatasetSource = Dataset | Callable[[], Dataset]


def _default_root() -> Path:
    configured = os.environ.get(MODELS_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path(__file__).resolve().parents[1] / "models"


def _folder_size(path: Path) -> int:
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


def _upload_version(name: str) -> str:
    """The `ModelKey.data_version` of dataset `name`: its upload fingerprint, "" for MovieLens."""
    from recengine.data import upload

    return upload.upload_fingerprint(name)


def sweep_leftovers(root: Path, older_than: float = STALE_STAGING_SECONDS) -> list[Path]:
    """Remove the hidden leftovers of interrupted saves and deletes under `root` (see `_LEFTOVER`)
    whose last change is more than `older_than` seconds ago; returns the folders removed.
    Model folders, `.locks` and anything else are never touched; symbolic links are not followed."""
    removed: list[Path] = []
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    now = time.time()
    for path in entries:
        if not _LEFTOVER.fullmatch(path.name):
            continue
        try:
            info = path.lstat()
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode) or now - info.st_mtime <= older_than:
            continue
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            logger.info("removed %s, left by an interrupted save or delete", path)
            removed.append(path)
    return removed


class ModelStore:
    """Trained models by `ModelKey`: in memory, on disk under `root`, trained on demand.

    root: artefact folder (default `$RECENGINE_MODELS_DIR`, else `<repo>/models`).
    device: where models are trained and loaded ("auto" | "cpu" | "cuda[:N]"), resolved once.
    datasets: extra datasets by name, each a `Dataset` or a zero-argument loader; other names
        go to `recengine.data.movielens.load_dataset` (MovieLens releases, "synthetic" and saved uploads).
    max_background_jobs: background trainings that run at once (others wait as "queued").

    Thread-safe: every method may be called from several threads (Streamlit sessions).
    """

    def __init__(
        self,
        root: str | Path | None = None,
        device: str | torch.device = "auto",
        datasets: Mapping[str, DatasetSource] | None = None,
        max_background_jobs: int = 1,
    ) -> None:
        if isinstance(max_background_jobs, bool) or not isinstance(max_background_jobs, int) or max_background_jobs < 1:
            raise ValueError(f"max_background_jobs must be an int >= 1, got {max_background_jobs!r}")
        self.root = Path(root).expanduser() if root is not None else _default_root()
        self.device = resolve_device(device)
        self._sources: dict[str, DatasetSource] = dict(datasets or {})
        self._lock = threading.RLock()
        self._datasets: dict[str, Dataset] = {}
        self._splits: dict[tuple[str, str, int], Split] = {}
        self._models: dict[ModelKey, Recommender] = {}
        self._meta: dict[ModelKey, dict[str, Any]] = {}
        self._locks: dict[Any, threading.Lock] = {}
        self._jobs: list[TrainingJob] = []
        self._job_slots = threading.BoundedSemaphore(max_background_jobs)
        self._data_versions: dict[str, str] = {}
        sweep_leftovers(self.root)

    def __repr__(self) -> str:
        return f"<ModelStore {self.root} on {self.device} ({len(self._models)} models in memory)>"

    # --- locks ------------------------------------------------------------------------------------
    def _lock_for(self, name: Any) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(name, threading.Lock())

    @contextmanager
    def _process_lock(self, key: ModelKey) -> Iterator[None]:
        """Exclusive lock on `<root>/.locks/<slug>.lock` across processes (no-op without fcntl)."""
        if fcntl is None:
            yield
            return
        folder = self.root / ".locks"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"{key.slug}.lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # --- datasets and splits ------------------------------------------------------------------------
    def register_dataset(self, name: str, source: DatasetSource) -> None:
        """Make `name` loadable: a Dataset, or a zero-argument function returning one."""
        with self._lock:
            self._sources[name] = source
            self._datasets.pop(name, None)
            for cached in [k for k in self._splits if k[0] == name]:
                del self._splits[cached]

    def dataset_names(self) -> list[str]:
        """Names `dataset()` accepts: the registered ones, then the MovieLens releases, "synthetic" and the uploads."""
        return list(dict.fromkeys([*self._sources, *movielens.dataset_names()]))

    def dataset(self, name: str) -> Dataset:
        """The dataset `name`, loaded once per store (thread-safe; concurrent callers wait).

        Raises ValueError for unknown names and `DatasetNotFoundError` when a release is absent.
        """
        cached = self._datasets.get(name)
        if cached is not None:
            return cached
        with self._lock_for(("dataset", name)):
            cached = self._datasets.get(name)
            if cached is None:
                source = self._sources.get(name)
                if source is None:
                    version = _upload_version(name)  # read before the data: a later change is seen by `key`
                    cached = movielens.load_dataset(name)
                    with self._lock:
                        self._data_versions[name] = version
                else:
                    cached = source if isinstance(source, Dataset) else source()
                if not isinstance(cached, Dataset):
                    raise TypeError(f"dataset source {name!r} gave {type(cached).__name__}, expected a Dataset")
                with self._lock:
                    self._datasets[name] = cached
            return cached

    def split(self, dataset: str, split: str = "random", seed: int = 42) -> Split:
        """The `Split(name, train, test)` of `dataset`, made once per (dataset, split, seed).

        Raises ValueError for an unknown split or one the dataset lacks (`u1` outside ml-100k).
        """
        if split not in SPLIT_NAMES:
            raise ValueError(f"split must be one of {list(SPLIT_NAMES)}, got {clip_repr(split)}")
        cache_key = (dataset, split, int(seed))
        cached = self._splits.get(cache_key)
        if cached is not None:
            return cached
        with self._lock_for(("split", *cache_key)):
            cached = self._splits.get(cache_key)
            if cached is None:
                cached = make_split(self.dataset(dataset), split, int(seed))
                with self._lock:
                    self._splits[cache_key] = cached
            return cached

    # --- keys ---------------------------------------------------------------------------------------
    def key(
        self,
        dataset: str,
        model: str,
        split: str = "random",
        seed: int = 42,
        hyper: Mapping[str, Any] | None = None,
        **more_hyper: Any,
    ) -> ModelKey:
        """A validated `ModelKey`; hyper-parameters go through the model's Config (`config_from_dict`).

        Hyper-parameters come by keyword (`key("ml-100k", "mf", epochs=20)`) or as a mapping
        `hyper=` (needed for a config field called `seed`, `split`, ... : `seed` here is the
        split's seed, while `hyper={"seed": 7}` seeds the model's weights). Values may be
        strings, as from a command line. Raises ValueError naming the allowed values for an
        unknown dataset, model, split or hyper-parameter, or an invalid value. Nothing is loaded.
        """
        known = self.dataset_names()
        if dataset not in known:
            raise ValueError(f"dataset must be one of {known}, got {clip_repr(dataset)}")
        if split not in SPLIT_NAMES:
            raise ValueError(f"split must be one of {list(SPLIT_NAMES)}, got {clip_repr(split)}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0 (the split's seed), got {clip_repr(seed)}")
        values = {**dict(hyper or {}), **more_hyper}
        config = config_from_dict(get_model_class(model).Config, values)
        version = "" if dataset in self._sources else _upload_version(dataset)
        self._forget_if_changed(dataset, version)
        return ModelKey(dataset, split, int(seed), model, config, version)

    def _forget_if_changed(self, dataset: str, version: str) -> None:
        """Drop the dataset and its splits from memory when its content changed since they were
        loaded (an upload replaced under the same name), so the next use reads the new data."""
        with self._lock:
            if dataset in self._datasets and self._data_versions.get(dataset, "") != version:
                self._datasets.pop(dataset, None)
                for cached in [k for k in self._splits if k[0] == dataset]:
                    del self._splits[cached]

    def path(self, key: ModelKey) -> Path:
        """Folder of the key's artefact (it may not exist)."""
        return self.root / key.slug

    # --- getting models -------------------------------------------------------------------------------
    def get(self, key: ModelKey) -> Recommender | None:
        """The model from memory, else from its folder; None when it is not trained (or the folder
        is damaged, which is warned about). Never waits for a training in progress."""
        model = self._models.get(key)
        if model is not None:
            return model
        with self._lock_for(("load", key)):
            model = self._models.get(key)
            return model if model is not None else self._load(key)

    def _stamp(self, key: ModelKey) -> int | None:
        """mtime (ns) of the key's meta.json, None when absent: tells whether the folder changed."""
        try:
            return (self.path(key) / "meta.json").stat().st_mtime_ns
        except OSError:
            return None

    def _load(self, key: ModelKey) -> Recommender | None:
        """Load the key's folder into memory (caller holds the key's load lock); None when absent
        or unusable (warned)."""
        path = self.path(key)
        if not (path / "meta.json").is_file():
            return None
        try:
            meta = Recommender.read_meta(path)
            model = Recommender.load(path, device=self.device)
            expected = {"dataset": key.dataset, "split": key.split, "seed": key.seed, "model": key.model}
            if key.data_version:
                expected["data_version"] = key.data_version
            found = {name: meta.get(name) for name in expected}
            if found != expected or model.name != key.model or model.config != key.config:
                raise ArtefactError(f"{path}: describes {found} with config {model.config}, not {expected} with {key.config}")
        except ArtefactError as error:
            message = f"ignoring damaged or incompatible model folder ({error}); it will be retrained"
            logger.warning(message)
            warnings.warn(message, RuntimeWarning, stacklevel=3)
            return None
        with self._lock:
            self._models[key] = model
            self._meta[key] = meta
        return model

    def get_or_train(self, key: ModelKey, on_epoch: EpochCallback | None = None) -> Recommender:
        """The model for `key`: from memory, else its folder, else trained, evaluated and saved.

        `on_epoch` receives the per-epoch events when this call trains. Concurrent calls for the
        same key (threads or processes) train once; the others wait and get the same model.
        Exceptions from training (including `TrainingCancelled` raised by `on_epoch`) propagate
        and nothing is saved.
        """
        model = self._models.get(key)
        if model is not None:
            return model
        with self._lock_for(("train", key)):
            stamp = self._stamp(key)
            model = self.get(key)
            if model is not None:
                return model
            with self._process_lock(key):
                if self._stamp(key) != stamp:  # another process saved it while we waited
                    model = self.get(key)
                if model is None:
                    model = self._train(key, on_epoch)
            return model

    def _train(self, key: ModelKey, on_epoch: EpochCallback | None) -> Recommender:
        return self._evaluate_and_save(key, *self._fit(key, on_epoch))

    def _fit(self, key: ModelKey, on_epoch: EpochCallback | None) -> tuple[Recommender, Dataset, str, float]:
        """Fit the key's model: (model, the part it was fitted on, what validated it, seconds)."""
        split = self.split(key.dataset, key.split, key.seed)
        model = create_model(key.model, key.config, device=self.device)
        if getattr(key.config, "early_stopping_patience", 0):
            carved = split_validation(split.train, VALIDATION_FRACTION, key.seed)
            fit_part, valid, validation = carved.train, carved.test, f"{VALIDATION_FRACTION:.0%} of train (early stopping)"
        else:
            fit_part, valid, validation = split.train, split.test, "test (monitoring only)"
        logger.info("training %s", key.describe())
        started = time.perf_counter()
        model.fit(fit_part, valid=valid, on_epoch=on_epoch)
        return model, fit_part, validation, time.perf_counter() - started

    def _evaluate_and_save(
        self, key: ModelKey, model: Recommender, fit_part: Dataset, validation: str, fit_seconds: float
    ) -> Recommender:
        """Evaluate a fitted model on the split's test part, save it with its meta.json, keep it in memory."""
        split = self.split(key.dataset, key.split, key.seed)
        started = time.perf_counter()
        if model.sequential and split.name == "user":
            # Next-item models on held-out users: the windowed protocol (MRR of each window's last item).
            from recengine.models.sequence import evaluate_next_item

            scores = evaluate_next_item(model, split, k=EVALUATION_K)
        else:
            scores = evaluate_model(model, split.train, split.test, k=EVALUATION_K)
        metrics = {name: float(value) for name, value in scores.items()}
        meta = {
            "dataset": key.dataset,
            "split": key.split,
            "seed": key.seed,
            "model": key.model,
            "config": key.config_dict(),
            **({"data_version": key.data_version} if key.data_version else {}),
            "slug": key.slug,
            "metrics": metrics,
            "fit_seconds": fit_seconds,
            "evaluate_seconds": time.perf_counter() - started,
            "validation": validation,
            "n_train": len(fit_part),
            "n_test": len(split.test),
            "device": describe_device(self.device),
        }
        if distributed.is_distributed():
            meta["world_size"] = distributed.world_size()
        with self._lock_for(("load", key)):  # a concurrent `get` sees the folder and memory together
            model.save(self.path(key), meta=meta)
            with self._lock:
                self._models[key] = model
                self._meta[key] = Recommender.read_meta(self.path(key))
        return model

    def train_distributed(
        self, key: ModelKey, on_epoch: EpochCallback | None = None, force: bool = False
    ) -> Recommender | None:
        """Train `key` data-parallel; every rank of the process group calls it (see the module docstring).

        Rank 0 decides: it reuses the saved model unless `force` (which deletes it first) or it is
        missing, and every rank follows. When training, every rank fits (`on_epoch` is called on
        rank 0 only), then rank 0 evaluates and saves while the others wait. Returns the model on
        rank 0 and None on the others. Without a process group of several ranks this is
        `get_or_train` (after deleting the key when `force`). A failure on rank 0 raises
        `DistributedAbort` on the other ranks.
        """
        if not distributed.is_distributed():
            if force:
                self.delete(key)
            return self.get_or_train(key, on_epoch)

        def needs_training() -> bool:
            if force:
                self.delete(key)
            return self.get(key) is None

        if not distributed.run_on_main(needs_training):
            return self.get(key) if distributed.is_main_process() else None
        fitted = self._fit(key, on_epoch)

        def evaluate_and_save() -> None:
            with self._lock_for(("train", key)), self._process_lock(key):
                self._evaluate_and_save(key, *fitted)

        distributed.run_on_main(evaluate_and_save)  # the other ranks wait here
        return fitted[0] if distributed.is_main_process() else None

    def metrics(self, key: ModelKey) -> dict[str, float] | None:
        """Test metrics of a trained key (from memory or its meta.json), else None."""
        meta = self._meta.get(key)
        if meta is None and (self.path(key) / "meta.json").is_file():
            try:
                meta = Recommender.read_meta(self.path(key))
            except ArtefactError:
                return None
        return dict(meta.get("metrics") or {}) if meta else None

    def meta(self, key: ModelKey) -> dict[str, Any] | None:
        """The whole meta.json of a model in memory (None when not loaded)."""
        meta = self._meta.get(key)
        return dict(meta) if meta is not None else None

    # --- background training ----------------------------------------------------------------------------
    def start_training(self, key: ModelKey) -> TrainingJob:
        """Train `key` in a daemon thread; returns its `TrainingJob` at once.

        While a job for the same key is queued or running, that job is returned instead of a
        new one. A key that is already trained gives a job that finishes at once (no events).
        """
        with self._lock:
            for job in self._jobs:
                if job.key == key and not job.finished:
                    return job
            job = TrainingJob(key)
            self._jobs.append(job)
        thread = threading.Thread(target=self._run_job, args=(job,), name=f"recengine-train-{key.slug}", daemon=True)
        thread.start()
        return job

    def _run_job(self, job: TrainingJob) -> None:
        try:
            with self._job_slots:
                if job.cancel_requested:
                    raise TrainingCancelled(f"training of {job.key.describe()} was cancelled before it started")
                job._set_state("running")
                model = self.get_or_train(job.key, on_epoch=job._on_epoch)
            job.model = model
            job.metrics = self.metrics(job.key)
            job._set_state("done")
        except TrainingCancelled as cancelled:
            job.error = str(cancelled)
            job._set_state("cancelled")
        except Exception as error:  # the job reports any failure; the thread must not die silently
            logger.exception("background training of %s failed", job.key.describe())
            job.error = f"{type(error).__name__}: {error}"
            job._set_state("failed")

    def jobs(self) -> list[TrainingJob]:
        """Background jobs started in this process, oldest first."""
        with self._lock:
            return list(self._jobs)

    # --- artefacts ------------------------------------------------------------------------------------
    def artefacts(self) -> list[ArtefactInfo]:
        """Every saved model folder under `root` with a readable meta.json, newest first."""
        if not self.root.is_dir():
            return []
        with self._lock:
            loaded = {key.slug for key in self._models}
        infos = []
        for path in self.root.iterdir():
            if path.name.startswith(".") or not (path / "meta.json").is_file():
                continue
            try:
                meta = json.loads((path / "meta.json").read_text())
                infos.append(
                    ArtefactInfo(
                        slug=path.name,
                        path=path,
                        dataset=str(meta.get("dataset", "")),
                        split=str(meta.get("split", "")),
                        seed=int(meta.get("seed", 0)),
                        model=str(meta.get("model", "")),
                        config=dict(meta.get("config") or {}),
                        metrics={k: float(v) for k, v in (meta.get("metrics") or {}).items()},
                        fit_seconds=float(meta.get("fit_seconds", 0.0)),
                        size_bytes=_folder_size(path),
                        saved_at=str(meta.get("saved_at", "")),
                        loaded=path.name in loaded,
                        device=str(meta.get("device", "")),
                    )
                )
            except (OSError, ValueError, TypeError, AttributeError) as error:
                logger.warning("skipping %s: unreadable meta.json (%s)", path, error)
        return sorted(infos, key=lambda info: (info.saved_at, info.slug), reverse=True)

    def delete(self, key: ModelKey | str) -> bool:
        """Forget a model: drop it from memory and remove its folder. True when anything was removed."""
        slug = key.slug if isinstance(key, ModelKey) else str(key)
        if not slug or "/" in slug or slug.startswith(".") or Path(slug).name != slug:
            raise ValueError(f"not a model folder name: {slug!r}")
        removed = False
        with self._lock:
            for cached in [k for k in self._models if k.slug == slug]:
                del self._models[cached]
                self._meta.pop(cached, None)
                removed = True
        path = self.root / slug
        if path.is_dir():
            trash = path.with_name(f".{slug}.deleted-{os.getpid()}-{time.monotonic_ns()}")
            os.replace(path, trash)  # atomic: readers never see half a folder
            shutil.rmtree(trash, ignore_errors=True)
            removed = True
        return removed


# --- one store per process ----------------------------------------------------------------------------
_DEFAULT_STORE: ModelStore | None = None
_DEFAULT_LOCK = threading.Lock()


def default_store() -> ModelStore:
    """The process-wide store (root from `$RECENGINE_MODELS_DIR` or `<repo>/models`, device "auto").

    The app wraps it in `st.cache_resource`; the command line uses it too.
    """
    global _DEFAULT_STORE
    with _DEFAULT_LOCK:
        if _DEFAULT_STORE is None:
            _DEFAULT_STORE = ModelStore()
        return _DEFAULT_STORE
