"""The Recommender contract shared by every model family, the model registry and the device helper.

Every model implements the same small surface so the store, the command line, the benchmarks
and every app page treat them alike:

- `fit(train, valid=None, on_epoch=None) -> self`: `on_epoch(EpochEvent)` is called once per
  epoch or iteration (loss, seconds, validation metrics) for progress bars and the training monitor.
- `predict(user_idx, item_idx) -> ndarray`: a rating for explicit models (`explicit = True`),
  a score for implicit ones.
- `score_users(user_idx) -> Tensor (n, n_items) float32` on the model's device: raw scores of
  every item for a batch of known users. Ranking, `recommend` and the evaluation build on it.
- `recommend(user_idx, k, exclude_seen=True) -> (item_idx, scores)`: top k for a known user,
  items seen in training excluded.
- `similar_items(item_idx, k) -> (item_idx, scores)`: nearest items by cosine of `item_factors()`,
  the item itself excluded.
- `item_factors() -> ndarray (n_items, d) float32`: the item representation for the latent map.
- `fold_in(ratings: {item_idx: rating}) -> ndarray`: the representation of a brand-new user
  from a handful of ratings without retraining; `score_folded(rep)` scores all items for it and
  `recommend_for(ratings, k)` chains both (rated items excluded).
- `save(path)` / `Recommender.load(path, device=...)`: an artefact folder (see `save`);
  loading never unpickles code (`torch.load(..., weights_only=True)`).

A concrete model defines `name`, `Config` (a frozen dataclass of hyper-parameters validated in
`__post_init__`), `explicit`, and implements `_fit`, `score_users`, `predict`, `item_factors`,
`fold_in`, `score_folded`, `_state` and `_restore`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import math
import os
import platform
import re
import shutil
import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

import numpy as np
import torch

from recengine.data.dataset import Dataset, IdMap

__all__ = [
    "ARTEFACT_FORMAT",
    "ArtefactError",
    "EpochEvent",
    "EpochCallback",
    "MAX_BATCH_SIZE",
    "MAX_EMBEDDING_DIM",
    "MAX_EPOCHS",
    "MAX_SEED",
    "NotFittedError",
    "Recommender",
    "TrainingError",
    "check_range",
    "clip_repr",
    "config_field_docs",
    "config_from_dict",
    "create_model",
    "get_model_class",
    "model_names",
    "register",
    "resolve_device",
    "top_k",
]

#: Version of the artefact folder layout; bump when `save` changes incompatibly.
ARTEFACT_FORMAT = 1
DEVICE_ENV = "RECENGINE_DEVICE"


class NotFittedError(RuntimeError):
    """A model was asked to predict before `fit` or `load`."""


class TrainingError(RuntimeError):
    """Training failed (for instance the loss became NaN); the message says what to change."""


class ArtefactError(RuntimeError):
    """A saved model folder is missing files, damaged, or from an incompatible version."""


@dataclass(frozen=True)
class EpochEvent:
    """What a model reports after each epoch or iteration of `fit`.

    `loss` is the mean training loss of the epoch; `metrics` holds validation figures
    (e.g. {"rmse": 0.93}); `seconds` is the time of this epoch alone.
    """

    epoch: int
    epochs: int
    loss: float
    seconds: float
    metrics: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, float]:
        return {"epoch": self.epoch, "epochs": self.epochs, "loss": self.loss, "seconds": self.seconds, **self.metrics}


EpochCallback = Callable[[EpochEvent], None]


# --- device -----------------------------------------------------------------------------------
def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """The one place a device is chosen: explicit name, else `$RECENGINE_DEVICE`, else CUDA when
    available, else CPU. Asking for CUDA where there is none is an error that says so."""
    if isinstance(device, torch.device):
        return device
    name = (device or "auto").strip().lower()
    if name == "auto":
        name = os.environ.get(DEVICE_ENV, "auto").strip().lower() or "auto"
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but CUDA is not available here; use 'cpu' or 'auto'")
    if name != "cpu" and not name.startswith("cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    return torch.device(name)


def describe_device(device: torch.device) -> str:
    """A human label: 'CPU' or the GPU's name."""
    if device.type == "cuda":
        return f"GPU ({torch.cuda.get_device_name(device)})"
    return "CPU"


# --- ranking helper ---------------------------------------------------------------------------
def top_k(scores: torch.Tensor, k: int, exclude: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the k highest `scores` (1-D), skipping indices in `exclude`.

    Ties are broken by the lower index first (deterministic). Excluded items never appear,
    so fewer than k come back when fewer remain.
    """
    scores = scores.detach().float().clone()
    if exclude is not None and exclude.numel():
        scores[exclude.to(scores.device, torch.long)] = -torch.inf
    available = int(torch.isfinite(scores).sum())
    k = max(0, min(int(k), available))
    if k == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    # stable ordering: sort by (-score, index)
    values, order = torch.sort(scores, descending=True, stable=True)
    return order[:k].cpu().numpy().astype(np.int64), values[:k].cpu().numpy().astype(np.float32)


# --- registry ---------------------------------------------------------------------------------
_REGISTRY: dict[str, type["Recommender"]] = {}


def register(cls: type["Recommender"]) -> type["Recommender"]:
    """Class decorator adding a model family to the registry under `cls.name`."""
    if not getattr(cls, "name", None):
        raise TypeError(f"{cls.__name__} needs a class attribute `name` to be registered")
    _REGISTRY[cls.name] = cls
    return cls


def _ensure_builtin_models() -> None:
    # Importing the package registers the built-in families (each module calls `register`).
    import recengine.models  # noqa: F401


def model_names() -> list[str]:
    """Names of the registered model families, in registration order."""
    _ensure_builtin_models()
    return list(_REGISTRY)


def get_model_class(name: str) -> type["Recommender"]:
    """The class registered under `name`; ValueError listing the known names otherwise."""
    _ensure_builtin_models()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"model must be one of {sorted(_REGISTRY)}, got {clip_repr(name)}") from None


#: Upper bounds shared by the model Configs (each Config checks its fields with `check_range`).
MAX_EPOCHS = 10_000
MAX_EMBEDDING_DIM = 4096
MAX_BATCH_SIZE = 2**24
MAX_SEED = 2**63 - 1
#: Longest text a hyper-parameter accepts (no allowed value comes near it).
MAX_HYPER_TEXT = 100
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")  # ASCII digits only


def clip_repr(value: Any, width: int = 80) -> str:
    """`repr(value)` cut to at most `width` characters (ending in "…") for an error message.

    Messages built from input quote it with this helper, so a 10,000-character argument gives a
    short message; `repr` already escapes control characters (NUL, ESC, CR) of strings.
    """
    text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def check_range(name: str, value: Any, low: float, high: float, *, integer: bool = True) -> None:
    """ValueError unless `value` is an int (`integer`; bools refused) or a finite number in [low, high].

    The bound every model Config puts on its sizes, counts and steps, e.g.
    `check_range("embedding_dim", self.embedding_dim, 1, 4096)`; the message names the range.
    """
    if integer:
        ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
        kind = "an integer"
    else:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and low <= value <= high
        kind = "a number"
    if not ok:
        raise ValueError(f"{name} must be {kind} from {low:,} to {high:,}, got {clip_repr(value)}")


def _parse_int(value: Any) -> int:
    """An int from an int, an integral float (JSON 5.0) or a string of digits ("5", "-2"); ValueError otherwise
    ("1e308", "2.5", "nan" and non-ASCII digits such as "²" are refused, never rounded)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(value)
        return int(value)
    if isinstance(value, str) and _INTEGER_TEXT.fullmatch(value.strip()):
        return int(value.strip())
    raise ValueError(value)


def config_from_dict(config_cls: type, values: Mapping[str, Any]) -> Any:
    """Build a hyper-parameter dataclass from a mapping, rejecting unknown names.

    Values are converted to each field's declared type where it is a plain int/float/bool/str
    (so command-line strings and JSON numbers both work); tuples come back from JSON lists.
    An int field takes an int, an integral float or a string of digits ("1e308" and "2.5" are
    refused); text longer than `MAX_HYPER_TEXT` characters is refused for any field. Messages
    quote the input at most 80 characters long (`clip_repr`).
    """
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        shown = ", ".join(clip_repr(name, 40) for name in unknown[:5]) + (", …" if len(unknown) > 5 else "")
        raise ValueError(f"unknown hyper-parameter(s) [{shown}] for {config_cls.__name__}; allowed: {sorted(fields)}")
    converted = {}
    for key, value in values.items():
        kind = fields[key].type
        kind = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
        try:
            if isinstance(value, str) and len(value) > MAX_HYPER_TEXT:
                raise ValueError(value)
            if kind == "bool" and isinstance(value, str):
                lowered = value.strip().lower()
                if lowered not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                value = lowered in ("true", "1", "yes")
            elif kind == "int" and not isinstance(value, bool):
                value = _parse_int(value)
            elif kind == "float" and not isinstance(value, bool):
                value = float(value)
            elif kind.startswith("tuple") and isinstance(value, (list, tuple)):
                value = tuple(value)
            elif kind.startswith("tuple") and isinstance(value, str):
                value = tuple(_parse_int(part) for part in value.replace(" ", "").split(",") if part)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"hyper-parameter {key} must be {kind}, got {clip_repr(value)}") from None
        converted[key] = value
    return config_cls(**converted)


_DOC_LINE = re.compile(r"^\s*#:\s?(?P<text>.*)$")
_FIELD_LINE = re.compile(r"^\s*(?P<name>[A-Za-z_]\w*)\s*:[^#]*(?:#:\s*(?P<doc>.*)|#.*)?$")


@functools.cache
def _field_docs_cached(config_cls: type) -> tuple[tuple[str, str], ...]:
    names = {spec.name for spec in dataclasses.fields(config_cls)}
    docs: dict[str, str] = {}
    for cls in reversed(config_cls.__mro__):  # bases first: a subclass's own comment wins
        if not dataclasses.is_dataclass(cls):
            continue
        try:
            lines = inspect.getsource(cls).splitlines()
        except (OSError, TypeError):
            continue
        pending: list[str] = []
        for line in lines:
            if line.strip().startswith("def "):  # the fields come before the methods
                break
            comment = _DOC_LINE.match(line)
            if comment:
                pending.append(comment.group("text").strip())
                continue
            field_line = _FIELD_LINE.match(line)
            if field_line and field_line.group("name") in names:
                doc = " ".join([*pending, (field_line.group("doc") or "").strip()]).strip()
                if doc:
                    docs[field_line.group("name")] = doc
            pending = []
    return tuple(docs.items())


def config_field_docs(config_cls: type) -> dict[str, str]:
    """{field name: documentation} of a Config dataclass, read from `#:` comments in its source.

    A field's doc is the `#:` lines just above it plus a trailing `#: ...` on its own line;
    fields inherited from dataclass bases keep the base's doc unless the subclass documents
    them again; fields without a comment (or whose source is unavailable) are absent. Cached
    per class (reading the source costs ~10 ms); the dict returned is the caller's to change.
    """
    return dict(_field_docs_cached(config_cls))


def create_model(name: str, config: Any = None, device: str | torch.device = "auto", **hyper: Any) -> "Recommender":
    """A new, unfitted model of family `name` with `config` or hyper-parameters given by keyword."""
    cls = get_model_class(name)
    if config is None:
        config = config_from_dict(cls.Config, hyper)
    elif hyper:
        config = dataclasses.replace(config, **hyper)
    return cls(config, device=device)


# --- artefact I/O -----------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    import recengine

    return {"recengine": recengine.__version__, "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()}


# --- the contract -----------------------------------------------------------------------------
class Recommender(ABC):
    """Base class of every model family; see the module docstring for the contract."""

    name: ClassVar[str] = ""
    Config: ClassVar[type]
    #: True when `predict` returns ratings on the dataset's scale (RMSE applies).
    explicit: ClassVar[bool] = True
    #: True when the model ranks from a user's ordered history (sequence models).
    sequential: ClassVar[bool] = False
    #: True when `explain`'s contributions are additive terms of the score (they sum to the score
    #: change the ratings cause, up to an output activation); False when they are per-rating effects
    #: that need not add up (e.g. leave-one-out drops of a non-linear model).
    explain_is_additive: ClassVar[bool] = True

    def __init__(self, config: Any = None, device: str | torch.device = "auto") -> None:
        self.config = config if config is not None else self.Config()
        if not isinstance(self.config, self.Config):
            raise TypeError(f"{type(self).__name__} expects a {self.Config.__name__}, got {type(self.config).__name__}")
        self.device = resolve_device(device)
        self.user_map: IdMap | None = None
        self.item_map: IdMap | None = None
        self.rating_scale: tuple[float, float] = (0.5, 5.0)
        self._seen_indptr: torch.Tensor | None = None  # CSR of training items per user (CPU)
        self._seen_items: torch.Tensor | None = None
        self.fit_seconds: float = 0.0
        self.history: list[EpochEvent] = []

    def __repr__(self) -> str:
        state = f"{self.n_users} users x {self.n_items} items" if self.is_fitted else "unfitted"
        return f"<{type(self).__name__} {self.name} ({state}) {self.config}>"

    # --- fitting ------------------------------------------------------------------------------
    def fit(self, train: Dataset, valid: Dataset | None = None, on_epoch: EpochCallback | None = None) -> "Recommender":
        """Train on `train` (validation figures from `valid` each epoch when given); returns self."""
        if len(train) == 0:
            raise ValueError(f"cannot fit {self.name} on an empty dataset ({train!r})")
        self.user_map, self.item_map, self.rating_scale = train.user_map, train.item_map, train.rating_scale
        indptr, items, _ = train.user_item_csr()
        self._seen_indptr = torch.from_numpy(indptr.copy())
        self._seen_items = torch.from_numpy(items.astype(np.int64))
        self.history = []
        events: list[EpochEvent] = self.history

        def record(event: EpochEvent) -> None:
            events.append(event)
            if on_epoch is not None:
                on_epoch(event)

        started = time.perf_counter()
        self._fit(train, valid, record)
        self.fit_seconds = time.perf_counter() - started
        return self

    @abstractmethod
    def _fit(self, train: Dataset, valid: Dataset | None, on_epoch: EpochCallback) -> None:
        """Family-specific training; call `on_epoch` once per epoch."""

    @property
    def is_fitted(self) -> bool:
        return self.item_map is not None

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"{self.name} model is not fitted: call fit(train) or Recommender.load(path) first")

    @property
    def n_users(self) -> int:
        return len(self.user_map) if self.user_map is not None else 0

    @property
    def n_items(self) -> int:
        return len(self.item_map) if self.item_map is not None else 0

    def _check_indices(self, users: np.ndarray | None, items: np.ndarray | None) -> None:
        """IndexError naming the valid range unless every user (item) index is a known one."""
        if users is not None and users.size and (users.min() < 0 or users.max() >= self.n_users):
            raise IndexError(f"user indices must be in 0..{self.n_users - 1}, got {users.min()}..{users.max()}")
        if items is not None and items.size and (items.min() < 0 or items.max() >= self.n_items):
            raise IndexError(f"item indices must be in 0..{self.n_items - 1}, got {items.min()}..{items.max()}")

    # --- scoring ------------------------------------------------------------------------------
    @abstractmethod
    def predict(self, user_idx: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        """Rating (explicit) or score (implicit) for each (user, item) pair: float32 array."""

    @abstractmethod
    def score_users(self, user_idx: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Scores of all items for known users: Tensor (len(user_idx), n_items) float32 on `device`."""

    @abstractmethod
    def item_factors(self) -> np.ndarray:
        """Item representation (n_items, d) float32 for the latent map and similar items."""

    @abstractmethod
    def fold_in(self, ratings: Mapping[int, float]) -> np.ndarray:
        """Representation of a brand-new user from {item_idx: rating}, without retraining."""

    @abstractmethod
    def score_folded(self, user_repr: np.ndarray) -> torch.Tensor:
        """Scores of all items (n_items,) float32 for a representation returned by `fold_in`."""

    def user_vector(self, user_repr: np.ndarray) -> np.ndarray | None:
        """The part of a `fold_in` representation that lives in the space of `item_factors()`
        (so it can be placed on the latent map), or None when the model has no such vector."""
        return None

    def explain(self, ratings: Mapping[int, float], item_idx: int) -> list[tuple[int, float]] | None:
        """How much each of a new user's ratings adds to `item_idx`'s score, largest first:
        [(rated_item_idx, contribution)], exact for models whose fold-in is linear in the
        ratings; None when the model cannot attribute its score (callers may fall back to
        leave-one-out re-scoring)."""
        return None

    def explain_many(self, ratings: Mapping[int, float], item_idx: np.ndarray) -> list[list[tuple[int, float]]] | None:
        """`explain(ratings, i)` for every item `i` of `item_idx` ((n,) int), aligned with it:
        entry j is exactly `explain(ratings, item_idx[j])`; None when the model cannot attribute
        its scores (`explain` returns None). This default calls `explain` once per item; models
        whose explanation shares work across items (one solve for all of them) override it."""
        explanations = []
        for item in np.asarray(item_idx, dtype=np.int64).reshape(-1).tolist():
            explanation = self.explain(ratings, int(item))
            if explanation is None:
                return None
            explanations.append(explanation)
        return explanations

    def seen_items(self, user_idx: int) -> torch.Tensor:
        """Item indices user `user_idx` interacted with in training (int64, CPU)."""
        self._check_fitted()
        start, end = int(self._seen_indptr[user_idx]), int(self._seen_indptr[user_idx + 1])
        return self._seen_items[start:end]

    def recommend(self, user_idx: int, k: int = 10, exclude_seen: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items for a known user: (item_idx int64, scores float32), best first."""
        self._check_fitted()
        if not 0 <= int(user_idx) < self.n_users:
            raise IndexError(f"user index {user_idx} out of range 0..{self.n_users - 1}")
        scores = self.score_users(np.array([int(user_idx)]))[0]
        return top_k(scores, k, self.seen_items(int(user_idx)) if exclude_seen else None)

    def recommend_for(self, ratings: Mapping[int, float], k: int = 10, exclude_rated: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Top-k for a brand-new user described by {item_idx: rating} (fold-in, no retraining)."""
        self._check_fitted()
        ratings = self._validate_new_ratings(ratings)
        scores = self.score_folded(self.fold_in(ratings))
        exclude = torch.tensor(sorted(ratings), dtype=torch.long) if exclude_rated and ratings else None
        return top_k(scores, k, exclude)

    def similar_items(self, item_idx: int, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The k items with the highest cosine similarity of `item_factors()` to `item_idx`."""
        self._check_fitted()
        if not 0 <= int(item_idx) < self.n_items:
            raise IndexError(f"item index {item_idx} out of range 0..{self.n_items - 1}")
        factors = torch.from_numpy(np.ascontiguousarray(self.item_factors(), dtype=np.float32))
        normed = torch.nn.functional.normalize(factors, dim=1)
        similarity = normed @ normed[int(item_idx)]
        return top_k(similarity, k, torch.tensor([int(item_idx)]))

    def _validate_new_ratings(self, ratings: Mapping[int, float]) -> dict[int, float]:
        """Check a new user's {item_idx: rating}: known items, finite ratings on the scale."""
        low, high = self.rating_scale
        clean: dict[int, float] = {}
        for item, rating in dict(ratings).items():
            item_index = int(item)
            if not 0 <= item_index < self.n_items:
                raise ValueError(f"item index {item} is not in this model's catalogue (0..{self.n_items - 1})")
            value = float(rating)
            if not np.isfinite(value) or not low <= value <= high:
                raise ValueError(f"rating for item {item} must be between {low} and {high}, got {rating!r}")
            clean[item_index] = value
        return clean

    # --- persistence --------------------------------------------------------------------------
    @abstractmethod
    def _state(self) -> dict[str, torch.Tensor]:
        """The learned tensors to save (any device; saved from CPU)."""

    @abstractmethod
    def _restore(self, state: dict[str, torch.Tensor]) -> None:
        """Rebuild the model from `_state()` tensors already moved to `self.device`."""

    def save(self, path: str | Path, meta: Mapping[str, Any] | None = None) -> Path:
        """Write the artefact folder atomically: config.json, weights.pt, ids.npz, meta.json.

        weights.pt holds CPU tensors only (and the training CSR of seen items); ids.npz the
        raw user and item ids (no object arrays); meta.json records `meta`, versions, time
        and the sha256 of the other files so damage is detected on load. The folder is built
        under a temporary name and renamed into place, so a crash leaves the old one intact.
        """
        self._check_fitted()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            state = {key: value.detach().to("cpu").contiguous() for key, value in self._state().items()}
            state["_seen_indptr"] = self._seen_indptr
            state["_seen_items"] = self._seen_items
            torch.save(state, staging / "weights.pt")
            np.savez(staging / "ids.npz", user_ids=self.user_map.ids, item_ids=self.item_map.ids, allow_pickle=False)
            (staging / "config.json").write_text(
                json.dumps(
                    {
                        "model": self.name,
                        "format": ARTEFACT_FORMAT,
                        "config": dataclasses.asdict(self.config),
                        "rating_scale": list(self.rating_scale),
                    },
                    indent=2,
                )
            )
            checksums = {name: _sha256(staging / name) for name in ("weights.pt", "ids.npz", "config.json")}
            full_meta = {
                **dict(meta or {}),
                "fit_seconds": self.fit_seconds,
                "history": [event.to_dict() for event in self.history],
                "versions": _versions(),
                "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "sha256": checksums,
            }
            (staging / "meta.json").write_text(json.dumps(full_meta, indent=2, default=float))
            backup = None
            if path.exists():
                backup = path.with_name(f".{path.name}.old-{os.getpid()}-{time.monotonic_ns()}")
                os.replace(path, backup)
            os.replace(staging, path)
            if backup is not None:
                shutil.rmtree(backup, ignore_errors=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return path

    @staticmethod
    def read_meta(path: str | Path) -> dict[str, Any]:
        """The artefact's meta.json (ArtefactError when missing or unreadable)."""
        file = Path(path) / "meta.json"
        if file.is_symlink():
            raise ArtefactError(f"{path}: meta.json is a symbolic link; an artefact folder holds plain files only")
        try:
            meta = json.loads(file.read_text())
        except (OSError, ValueError, RecursionError) as error:
            raise ArtefactError(f"{path}: meta.json is missing or unreadable ({error})") from error
        if not isinstance(meta, dict):
            raise ArtefactError(f"{path}: meta.json must hold a JSON object, got a {type(meta).__name__}")
        return meta

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "auto") -> "Recommender":
        """Load an artefact folder written by `save`, verifying checksums; never unpickles code.

        Called on `Recommender` it dispatches to the family named in config.json; called on a
        subclass it also checks the family matches. Raises ArtefactError on any damage.
        """
        path = Path(path)
        if path.is_symlink():
            raise ArtefactError(f"{path}: the artefact folder is a symbolic link; move the real folder into place")
        meta = cls.read_meta(path)
        expected = meta.get("sha256")
        if not isinstance(expected, dict) or not all(isinstance(value, str) for value in expected.values()):
            raise ArtefactError(f"{path}: meta.json's sha256 must be an object of checksums, got {clip_repr(expected)}")
        for name in ("weights.pt", "ids.npz", "config.json"):
            file = path / name
            if file.is_symlink():  # never follow a link out of the folder, whatever it points to
                raise ArtefactError(f"{path}: {name} is a symbolic link; an artefact folder holds plain files only")
            if not file.is_file():
                raise ArtefactError(f"{path}: {name} is missing")
            if expected.get(name) != _sha256(file):
                raise ArtefactError(f"{path}: {name} does not match its recorded checksum (damaged or altered)")
        try:
            header = json.loads((path / "config.json").read_text())
        except (ValueError, RecursionError) as error:
            raise ArtefactError(f"{path}: config.json is not valid JSON ({error})") from error
        if not isinstance(header, dict):
            raise ArtefactError(f"{path}: config.json must hold a JSON object, got a {type(header).__name__}")
        if header.get("format") != ARTEFACT_FORMAT:
            raise ArtefactError(f"{path}: artefact format {clip_repr(header.get('format'))}, this version reads {ARTEFACT_FORMAT}")
        try:
            family = get_model_class(header.get("model", ""))
        except (ValueError, TypeError) as error:
            raise ArtefactError(f"{path}: config.json names no known model family ({error})") from None
        if cls is not Recommender and family is not cls:
            raise ArtefactError(f"{path}: holds a {family.name} model, not {cls.name}")
        try:
            config = config_from_dict(family.Config, header["config"])
            model = family(config, device=device)
            with np.load(path / "ids.npz", allow_pickle=False) as ids:
                model.user_map, model.item_map = IdMap(ids["user_ids"]), IdMap(ids["item_ids"])
            state = torch.load(path / "weights.pt", map_location="cpu", weights_only=True)
            model._seen_indptr = state.pop("_seen_indptr")
            model._seen_items = state.pop("_seen_items")
            model.rating_scale = tuple(header.get("rating_scale", (0.5, 5.0)))
            model._restore({key: value.to(model.device) for key, value in state.items()})
        except ArtefactError:
            raise
        except Exception as error:  # any parse/shape problem means the artefact is unusable
            raise ArtefactError(f"{path}: cannot be loaded ({type(error).__name__}: {error})") from error
        try:
            model.fit_seconds = float(meta.get("fit_seconds", 0.0))
            model.history = [
                EpochEvent(
                    int(e["epoch"]), int(e["epochs"]), float(e["loss"]), float(e["seconds"]),
                    {k: float(v) for k, v in e.items() if k not in ("epoch", "epochs", "loss", "seconds")},
                )
                for e in meta.get("history", [])
            ]
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ArtefactError(f"{path}: meta.json's fit_seconds or history is malformed ({type(error).__name__}: {error})") from None
        return model
