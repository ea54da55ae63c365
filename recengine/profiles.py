"""Saved profiles: a person's ratings of one dataset's movies, kept in SQLite across sessions.

One SQLite file (stdlib `sqlite3`, WAL mode) holds every profile: `$RECENGINE_PROFILES_DB`
when set, else `$XDG_DATA_HOME/recengine/profiles.sqlite3`, else
`~/.local/share/recengine/profiles.sqlite3`.

- A profile belongs to one dataset and has a name: 1-80 characters after trimming, no
  control characters, unique *per dataset* ignoring ASCII case ("Alice" on ml-100k and
  "alice" on ml-latest-small are two profiles; a second "ALICE" on ml-100k is refused).
- Ratings are stored by the dataset's ORIGINAL item id (MovieLens `movieId`, or an uploaded
  file's item id; int or str as in `Dataset.item_map.ids`), never by the contiguous index,
  so they survive re-indexing. They come back in the order first rated; changing a rating
  keeps its place, as in the app's in-session `Profile` (a dict in insertion order).
- `rate`, `unrate`, `skip`, `unskip` each commit their own transaction at once: a closed
  browser tab loses nothing that was clicked. (`synchronous=NORMAL`: durable across process
  crashes; a power cut may lose the last transactions, never corrupt the file.)
- Concurrent writers (threads, Streamlit sessions, processes): each thread of each process
  has its own connection, every write runs inside `BEGIN IMMEDIATE`, waits on SQLite's busy timeout and retries
  with backoff when the database is locked, so "database is locked" never reaches callers
  unless the file stays locked for `retry_seconds` (then `ProfileStoreError`).
- The schema is versioned with `PRAGMA user_version` and upgraded on open through
  `MIGRATIONS` (one step per version); a file from a newer version is refused, not touched.

Exchange formats (all parsed by validators that raise only `ProfileError`, a ValueError):

- JSON: {"format": "recengine-profile", "version": 1, "name", "dataset", "ratings": [{"item_id",
  "rating", "rated_at"?, "title"?}, ...], "skipped": [item_id, ...]};
- CSV: header `item_id,rating,rated_at,title` (rated_at and title optional on import; the
  profile's name and dataset come from the caller; skipped items are not part of CSV);
- a shareable link: URL query parameters `dataset=ml-100k&r=1:5,50:4.5[&name=...]`, at most
  `MAX_LINK_RATINGS` ratings.

Imports check the structure, types, ratings (finite, on the scale, in 0.5 steps), sizes
(`MAX_IMPORT_BYTES`, `MAX_IMPORT_RATINGS`) and, given the Dataset, that every item exists
(unknown ids are listed). Duplicate items: the last occurrence wins (its rating and its place);
how many were dropped is in `ProfileData.duplicates_dropped`. Exports are written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import random
import re
import sqlite3
import tempfile
import threading
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar, Union
from urllib.parse import parse_qs, quote, unquote

import numpy as np

from recengine.data.dataset import Dataset
from recengine.data.upload import user_data_dir

__all__ = [
    "MAX_IMPORT_BYTES",
    "MAX_IMPORT_RATINGS",
    "MAX_LINK_RATINGS",
    "MAX_NAME_CHARS",
    "MIGRATIONS",
    "PROFILES_DB_ENV",
    "SCHEMA_VERSION",
    "ProfileData",
    "ProfileError",
    "ProfileExistsError",
    "ProfileInfo",
    "ProfileNotFoundError",
    "ProfileStore",
    "ProfileStoreError",
    "Rating",
    "default_profiles_path",
    "item_id_of",
    "parse_profile_csv",
    "parse_profile_json",
    "parse_profile_link",
    "profile_link",
    "profile_to_csv",
    "profile_to_json",
    "read_profile_file",
    "validate_profile_name",
    "write_profile_file",
]

#: Environment variable naming the profiles database file.
PROFILES_DB_ENV = "RECENGINE_PROFILES_DB"
MAX_NAME_CHARS = 80
MAX_ITEM_ID_CHARS = 200
#: Largest profile file accepted by the importers (bytes of text) and most ratings in one.
MAX_IMPORT_BYTES = 2_000_000
MAX_IMPORT_RATINGS = 20_000
#: Most ratings a shareable link carries, and the longest query string accepted.
MAX_LINK_RATINGS = 200
MAX_LINK_CHARS = 8_000
FORMAT_NAME = "recengine-profile"
FORMAT_VERSION = 1
DEFAULT_SCALE = (0.5, 5.0)

ItemId = Union[int, str]
T = TypeVar("T")


# --- errors -------------------------------------------------------------------------------------
class ProfileError(ValueError):
    """Invalid input: a name, a rating, an item id, an import file or a link."""


class ProfileNotFoundError(ProfileError, LookupError):
    """No profile with that id, or that name on that dataset."""


class ProfileExistsError(ProfileError):
    """A profile with that name already exists on that dataset (names ignore ASCII case)."""


class ProfileStoreError(RuntimeError):
    """The database cannot be used: not an SQLite file, from a newer version, or locked for too long."""


# --- values -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rating:
    """One rating: original item id, rating on the dataset's scale, when (seconds since the epoch)."""

    item_id: ItemId
    rating: float
    rated_at: float


@dataclass(frozen=True)
class ProfileInfo:
    """A saved profile without its ratings (for lists and pickers)."""

    id: int
    name: str
    dataset: str
    created_at: float
    updated_at: float
    n_ratings: int
    n_skipped: int


@dataclass(frozen=True)
class ProfileData:
    """A profile's content: what is exported, imported and shared.

    ratings: in the order rated (no item twice); skipped: item ids marked "not seen";
    duplicates_dropped: how many repeated items an importer dropped (the last one wins).
    """

    name: str
    dataset: str
    ratings: tuple[Rating, ...]
    skipped: tuple[ItemId, ...] = ()
    duplicates_dropped: int = 0

    def ratings_by_id(self) -> dict[ItemId, float]:
        """{original item id: rating} in the order rated."""
        return {r.item_id: r.rating for r in self.ratings}

    def item_ratings(self, dataset: Dataset) -> tuple[dict[int, float], list[ItemId]]:
        """({item_idx: rating} for `dataset`, in the order rated; item ids the dataset lacks).

        This is what `Recommender.fold_in` / the app's session Profile take.
        """
        ids = [r.item_id for r in self.ratings]
        indices = _indices(dataset, ids)
        known = {int(i): r.rating for i, r in zip(indices.tolist(), self.ratings) if i >= 0}
        missing = [item for item, i in zip(ids, indices.tolist()) if i < 0]
        return known, missing

    def skipped_items(self, dataset: Dataset) -> set[int]:
        """Item indices of the skipped items that `dataset` has (for the session Profile's `skipped`)."""
        return {int(i) for i in _indices(dataset, list(self.skipped)).tolist() if i >= 0}


def _indices(dataset: Dataset, ids: Sequence[ItemId]) -> np.ndarray:
    kind = dataset.item_map.ids.dtype.kind
    if kind in "iu":
        typed = [i if isinstance(i, int) else None for i in ids]
        usable = np.array([t is not None for t in typed], dtype=bool)
        found = np.full(len(ids), -1, dtype=np.int64)
        if usable.any():
            found[usable] = dataset.item_map.indices_of(np.array([t for t in typed if t is not None], dtype=np.int64))
        return found
    return dataset.item_map.indices_of(np.array([str(i) for i in ids], dtype=str)) if ids else np.zeros(0, np.int64)


def item_id_of(dataset: Dataset, item_idx: int) -> ItemId:
    """The original item id (Python int or str) of a contiguous item index, for `ProfileStore.rate`."""
    raw = dataset.item_map.ids[int(item_idx)]
    return raw.item() if hasattr(raw, "item") else raw


# --- validation ---------------------------------------------------------------------------------
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CANONICAL_INT = re.compile(r"-?(?:0|[1-9][0-9]{0,17})")


def validate_profile_name(name: object, what: str = "profile name") -> str:
    """The name trimmed and NFC-normalised; ProfileError unless 1-80 characters without control characters."""
    if not isinstance(name, str):
        raise ProfileError(f"{what} must be text, got {type(name).__name__}")
    cleaned = unicodedata.normalize("NFC", name).strip()
    if not cleaned:
        raise ProfileError(f"{what} is empty; give it 1-{MAX_NAME_CHARS} characters")
    if len(cleaned) > MAX_NAME_CHARS:
        raise ProfileError(f"{what} is {len(cleaned)} characters long; use at most {MAX_NAME_CHARS}")
    bad = _CONTROL.search(cleaned)
    if bad:
        raise ProfileError(f"{what} contains the control character {bad.group()!r}; use letters, digits, spaces and punctuation")
    return cleaned


def _dataset_name(name: object) -> str:
    return validate_profile_name(name, "dataset name")


def _item_id(value: object, where: str = "item id") -> ItemId:
    """A storable item id: a Python int (numpy ints converted) or non-empty text."""
    if isinstance(value, np.integer):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ProfileError(f"{where} must be an integer or text, got {value!r}")
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise ProfileError(f"{where} {value} is out of range")
        return value
    if not value.strip() or len(value) > MAX_ITEM_ID_CHARS or _CONTROL.search(value):
        raise ProfileError(f"{where} must be 1-{MAX_ITEM_ID_CHARS} printable characters, got {value[:40]!r}")
    return value


def _rating(value: object, scale: tuple[float, float], where: str = "rating") -> float:
    """A finite number on the scale in 0.5 steps, as float."""
    low, high = scale
    expected = f"a number from {low:g} to {high:g} in steps of 0.5"
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProfileError(f"{where} must be {expected}, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or not low <= number <= high or number * 2 != round(number * 2):
        raise ProfileError(f"{where} must be {expected}, got {value!r}")
    return number


def _timestamp(value: object, where: str = "rated_at") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 <= value < 1e11:
        raise ProfileError(f"{where} must be seconds since 1970 (a non-negative number), got {value!r}")
    return float(value)


def _scale_of(dataset: Dataset | None) -> tuple[float, float]:
    return tuple(map(float, dataset.rating_scale)) if dataset is not None else DEFAULT_SCALE  # type: ignore[return-value]


def _conform(item: ItemId, dataset: Dataset | None) -> ItemId:
    """An item id typed like the dataset's ids: "12" -> 12 for integer ids, 12 -> "12" for text ids."""
    if dataset is None:
        return item
    if dataset.item_map.ids.dtype.kind in "iu":
        if isinstance(item, str) and _CANONICAL_INT.fullmatch(item.strip()):
            return int(item.strip())
        return item
    return str(item)


def _finish(
    name: str, dataset_name: str, ratings: list[Rating], skipped: list[ItemId], dataset: Dataset | None, source: str
) -> ProfileData:
    """Conform ids, drop duplicates (last wins), check the items exist; the common end of every importer."""
    if dataset is not None and dataset.name != dataset_name:
        raise ProfileError(f"{source} is a profile of {dataset_name!r}, not of {dataset.name!r}; import it on {dataset_name}")
    latest: dict[ItemId, Rating] = {}
    for rating in ratings:
        item = _conform(rating.item_id, dataset)
        latest.pop(item, None)  # re-insert: the last occurrence sets the place
        latest[item] = Rating(item, rating.rating, rating.rated_at)
    duplicates = len(ratings) - len(latest)
    skips = [s for s in dict.fromkeys(_conform(s, dataset) for s in skipped) if s not in latest]
    if dataset is not None:
        every = [*latest, *skips]
        unknown = [item for item, i in zip(every, _indices(dataset, every).tolist()) if i < 0]
        if unknown:
            shown = ", ".join(repr(u) for u in unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
            raise ProfileError(f"{source}: {len(unknown)} item id(s) are not in {dataset.name}: {shown}; remove them and import again")
    return ProfileData(name, dataset_name, tuple(latest.values()), tuple(skips), duplicates)


# --- JSON and CSV -------------------------------------------------------------------------------
def profile_to_json(data: ProfileData, titles: Mapping[ItemId, str] | None = None) -> str:
    """The profile as JSON text (see the module docstring); `titles` adds a readable title per rating."""
    ratings = []
    for r in data.ratings:
        entry: dict[str, Any] = {"item_id": r.item_id, "rating": r.rating, "rated_at": r.rated_at}
        if titles is not None and r.item_id in titles:
            entry["title"] = titles[r.item_id]
        ratings.append(entry)
    payload = {
        "format": FORMAT_NAME, "version": FORMAT_VERSION, "name": data.name, "dataset": data.dataset,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "ratings": ratings, "skipped": list(data.skipped),
    }  # fmt: skip
    return json.dumps(payload, indent=1, ensure_ascii=False, allow_nan=False) + "\n"


def profile_to_csv(data: ProfileData, titles: Mapping[ItemId, str] | None = None) -> str:
    """The ratings as CSV text with header item_id,rating,rated_at,title (skipped items are not included)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["item_id", "rating", "rated_at", "title"])
    for r in data.ratings:
        writer.writerow([r.item_id, f"{r.rating:g}", repr(r.rated_at), (titles or {}).get(r.item_id, "")])
    return out.getvalue()


def _refuse_constant(name: str) -> Any:
    raise ProfileError(f"{name} is not a valid number in a profile file; ratings must be finite numbers")


def _check_size(text: str, source: str) -> None:
    if not isinstance(text, str):
        raise ProfileError(f"{source}: expected text, got {type(text).__name__}")
    if len(text) > MAX_IMPORT_BYTES:
        raise ProfileError(f"{source} is {len(text):,} characters long, over the {MAX_IMPORT_BYTES:,} limit")


def parse_profile_json(
    text: str,
    *,
    dataset: Dataset | None = None,
    name: str | None = None,
    dataset_name: str | None = None,
    source: str = "profile file",
) -> ProfileData:
    """Validate JSON profile text (as written by `profile_to_json`) into `ProfileData`.

    dataset: when given, the profile must be of that dataset, ratings must be on its scale and
    every item id must exist in it (unknown ids are listed); otherwise the scale is 0.5-5.
    name / dataset_name: replace the file's profile name / dataset name (to import elsewhere).
    Raises ProfileError (a ValueError) for anything else, naming the field at fault.
    """
    _check_size(text, source)
    try:
        payload = json.loads(text, parse_constant=_refuse_constant)
    except ProfileError:
        raise
    except (ValueError, RecursionError) as error:
        raise ProfileError(f"{source} is not valid JSON ({error})") from None
    if not isinstance(payload, dict):
        raise ProfileError(f"{source} must hold a JSON object with format {FORMAT_NAME!r}, got {type(payload).__name__}")
    if payload.get("format") != FORMAT_NAME:
        raise ProfileError(f"{source} is not a recengine profile: expected \"format\": \"{FORMAT_NAME}\", got {payload.get('format')!r}")
    version = payload.get("version")
    if isinstance(version, bool) or version != FORMAT_VERSION:
        raise ProfileError(f"{source} has version {version!r}; this recengine reads version {FORMAT_VERSION}")
    name = validate_profile_name(payload.get("name") if name is None else name)
    dataset_name = _dataset_name(payload.get("dataset") if dataset_name is None else dataset_name)
    entries, skipped = payload.get("ratings"), payload.get("skipped", [])
    if not isinstance(entries, list) or not isinstance(skipped, list):
        raise ProfileError(f"{source}: \"ratings\" and \"skipped\" must be lists")
    if len(entries) > MAX_IMPORT_RATINGS or len(skipped) > MAX_IMPORT_RATINGS:
        raise ProfileError(f"{source} holds more than {MAX_IMPORT_RATINGS:,} ratings or skipped items; split it")
    scale = _scale_of(dataset)
    ratings = []
    for number, entry in enumerate(entries):
        where = f"{source}: ratings[{number}]"
        if not isinstance(entry, dict):
            raise ProfileError(f"{where} must be an object like {{\"item_id\": 1, \"rating\": 4.5}}, got {entry!r:.60}")
        unknown_keys = set(entry) - {"item_id", "rating", "rated_at", "title"}
        if unknown_keys:
            raise ProfileError(f"{where} has unexpected field(s) {sorted(unknown_keys)}; allowed: item_id, rating, rated_at, title")
        item = _item_id(entry.get("item_id"), f"{where}.item_id")
        rating = _rating(entry.get("rating"), scale, f"{where}.rating")
        rated_at = _timestamp(entry.get("rated_at", 0.0), f"{where}.rated_at")
        if "title" in entry and not isinstance(entry["title"], str):
            raise ProfileError(f"{where}.title must be text, got {entry['title']!r:.60}")
        ratings.append(Rating(item, rating, rated_at))
    skips = [_item_id(s, f"{source}: skipped[{n}]") for n, s in enumerate(skipped)]
    return _finish(name, dataset_name, ratings, skips, dataset, source)


def parse_profile_csv(
    text: str, *, name: str, dataset_name: str, dataset: Dataset | None = None, source: str = "profile file"
) -> ProfileData:
    """Validate CSV ratings (header with item_id and rating; rated_at and title optional) into `ProfileData`.

    Rows are reported 1-based with the header as row 1. Item ids that are plain integers become
    ints unless the dataset's ids are text. Raises ProfileError for anything else.
    """
    _check_size(text, source)
    name, dataset_name = validate_profile_name(name), _dataset_name(dataset_name)
    try:
        rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
    except csv.Error as error:
        raise ProfileError(f"{source} is not valid CSV ({error})") from None
    rows = [(number, row) for number, row in enumerate(rows, 1) if any(cell.strip() for cell in row)]
    if not rows:
        raise ProfileError(f"{source} is empty; expected a header item_id,rating[,rated_at,title] and one rating per row")
    header = [cell.strip().lower() for cell in rows[0][1]]
    if "item_id" not in header or "rating" not in header:
        raise ProfileError(f"{source}: row {rows[0][0]} must be a header naming item_id and rating, got {rows[0][1]!r:.80}")
    if len(rows) - 1 > MAX_IMPORT_RATINGS:
        raise ProfileError(f"{source} holds more than {MAX_IMPORT_RATINGS:,} ratings; split it")
    column = {label: header.index(label) for label in ("item_id", "rating", "rated_at") if label in header}
    scale = _scale_of(dataset)
    ratings = []
    for number, row in rows[1:]:
        if len(row) != len(header):
            raise ProfileError(f"{source}: row {number} has {len(row)} fields where the header has {len(header)}")
        raw_item = row[column["item_id"]].strip()
        item: ItemId = int(raw_item) if _CANONICAL_INT.fullmatch(raw_item) else raw_item
        item = _item_id(item, f"{source}: row {number}, column 'item_id'")
        raw_rating = row[column["rating"]].strip()
        where = f"{source}: row {number}, column 'rating'"
        try:
            value = float(raw_rating)
        except ValueError:
            raise ProfileError(f"{where} must be a number, got {raw_rating!r:.40}") from None
        rating = _rating(value, scale, where)
        rated_at = 0.0
        if "rated_at" in column and row[column["rated_at"]].strip():
            raw_time = row[column["rated_at"]].strip()
            try:
                rated_at = _timestamp(float(raw_time), f"{source}: row {number}, column 'rated_at'")
            except ValueError as error:
                raise ProfileError(str(error) if isinstance(error, ProfileError) else
                                   f"{source}: row {number}, column 'rated_at' must be a number, got {raw_time!r:.40}") from None  # fmt: skip
        ratings.append(Rating(item, rating, rated_at))
    return _finish(name, dataset_name, ratings, [], dataset, source)


def _atomic_write(path: Path, text: str) -> None:
    """Write text to `path` through a temporary file in the same folder and `os.replace`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _format_of(path: Path, format: str | None) -> str:
    chosen = (format or path.suffix.lstrip(".")).lower()
    if chosen not in ("json", "csv"):
        raise ProfileError(f"format must be 'json' or 'csv' (or a .json/.csv file name), got {format or path.name!r}")
    return chosen


def write_profile_file(data: ProfileData, path: str | Path, format: str | None = None, *, dataset: Dataset | None = None) -> Path:
    """Export atomically as JSON or CSV (from `format`, else the file's suffix); titles come from `dataset`."""
    path = Path(path)
    chosen = _format_of(path, format)
    titles = None
    if dataset is not None:
        indices = _indices(dataset, [r.item_id for r in data.ratings])
        names = dataset.catalogue["display_title"].tolist()
        titles = {r.item_id: names[i] for r, i in zip(data.ratings, indices.tolist()) if i >= 0}
    _atomic_write(path, profile_to_json(data, titles) if chosen == "json" else profile_to_csv(data, titles))
    return path


def read_profile_file(
    path: str | Path, *, dataset: Dataset | None = None, name: str | None = None, dataset_name: str | None = None
) -> ProfileData:
    """Read and validate a .json or .csv profile file. For CSV, `name` and `dataset_name` (or the
    Dataset's name) are required; for JSON they override what the file says when given."""
    path = Path(path)
    chosen = _format_of(path, None)
    try:
        if path.stat().st_size > MAX_IMPORT_BYTES:
            raise ProfileError(f"{path} is {path.stat().st_size:,} bytes, over the {MAX_IMPORT_BYTES:,} limit")
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ProfileError(f"{path} is not UTF-8 text (byte offset {error.start}); save it as UTF-8") from None
    except OSError as error:
        raise ProfileError(f"cannot read {path}: {error.strerror or error}") from None
    if chosen == "json":
        return parse_profile_json(text, dataset=dataset, name=name, dataset_name=dataset_name, source=str(path))
    target = dataset_name or (dataset.name if dataset is not None else None)
    if name is None or target is None:
        raise ProfileError(f"{path}: a CSV profile needs a profile name and a dataset (--name, --dataset)")
    return parse_profile_csv(text, name=name, dataset_name=target, dataset=dataset, source=str(path))


# --- shareable links ----------------------------------------------------------------------------
def profile_link(
    ratings: ProfileData | Mapping[ItemId, float], dataset_name: str | None = None, *, name: str | None = None, base_url: str = ""
) -> str:
    """Query string (prefixed with `base_url` and "?" when given) carrying up to `MAX_LINK_RATINGS`
    ratings: `dataset=ml-100k&r=1:5,50:4.5`. Text item ids are percent-encoded."""
    if isinstance(ratings, ProfileData):
        dataset_name = dataset_name or ratings.dataset
        name = name if name is not None else ratings.name
        pairs = ratings.ratings_by_id()
    else:
        pairs = dict(ratings)
    if dataset_name is None:
        raise ProfileError("a link needs the dataset's name")
    dataset_name = _dataset_name(dataset_name)
    if not pairs:
        raise ProfileError("a link needs at least one rating")
    if len(pairs) > MAX_LINK_RATINGS:
        raise ProfileError(f"a link carries at most {MAX_LINK_RATINGS} ratings, this profile has {len(pairs)}; export it as a file instead")
    parts = []
    for item, value in pairs.items():
        item = _item_id(item)
        rating = _rating(value, (0.5, 10.0))
        parts.append(f"{item if isinstance(item, int) else quote(item, safe='')}:{rating:g}")
    query = f"dataset={quote(dataset_name, safe='')}&r={quote(','.join(parts), safe=',:')}"
    if name:
        query += f"&name={quote(validate_profile_name(name), safe='')}"
    return f"{base_url}?{query}" if base_url else query


_LINK_RATING = re.compile(r"[0-9]{1,2}(?:\.[05])?")


def parse_profile_link(
    query: str | Mapping[str, str | Sequence[str]], *, dataset: Dataset | None = None, default_name: str = "shared profile"
) -> ProfileData:
    """The profile a link carries: a whole URL, a query string ("?dataset=...&r=...") or a mapping
    such as Streamlit's `st.query_params`. Everything is validated; the only exception raised is
    ProfileError (a ValueError) with a message for people."""
    try:
        return _parse_link(query, dataset, default_name)
    except ProfileError:
        raise
    except Exception as error:  # noqa: BLE001 - the promise: nothing but a ValueError escapes
        raise ProfileError(f"this link cannot be read ({type(error).__name__}); ask for a new link") from None


def _parse_link(query: Any, dataset: Dataset | None, default_name: str) -> ProfileData:
    if isinstance(query, str):
        if len(query) > MAX_LINK_CHARS:
            raise ProfileError(f"this link is {len(query):,} characters long, over the {MAX_LINK_CHARS:,} limit")
        text = query.split("?", 1)[1] if "?" in query else query
        text = text.split("#", 1)[0]
        try:
            fields: dict[str, list[str]] = parse_qs(text, keep_blank_values=True, max_num_fields=20, errors="strict")
        except ValueError:
            raise ProfileError("this link has too many parameters; expected dataset=...&r=...") from None
    elif isinstance(query, Mapping):
        fields = {}
        for key, value in query.items():
            values = [value] if isinstance(value, str) else list(value)
            if not all(isinstance(v, str) for v in values) or not isinstance(key, str):
                raise ProfileError("link parameters must be text")
            fields[key] = values
    else:
        raise ProfileError(f"a link must be text or query parameters, got {type(query).__name__}")

    def one(key: str, required: bool = True) -> str | None:
        values = fields.get(key, [])
        if len(values) > 1:
            raise ProfileError(f"the link gives {key!r} {len(values)} times; expected once")
        if not values or not values[0].strip():
            if required:
                raise ProfileError(f"the link has no {key!r} parameter; expected dataset=NAME&r=ITEM:RATING,...")
            return None
        return values[0]

    dataset_name = _dataset_name(one("dataset"))
    raw_name = one("name", required=False)
    name = validate_profile_name(raw_name) if raw_name is not None else default_name
    body = one("r") or ""
    entries = body.split(",")
    if len(entries) > MAX_LINK_RATINGS:
        raise ProfileError(f"the link carries {len(entries)} ratings; at most {MAX_LINK_RATINGS} are accepted")
    scale = _scale_of(dataset)
    ratings = []
    for number, entry in enumerate(entries, 1):
        raw_item, sep, raw_rating = entry.rpartition(":")
        if not sep or not raw_item or not _LINK_RATING.fullmatch(raw_rating):
            raise ProfileError(f"rating {number} of the link is {entry[:40]!r}; expected ITEM:RATING such as 50:4.5")
        text_id = unquote(raw_item, errors="strict")
        item: ItemId = int(text_id) if _CANONICAL_INT.fullmatch(text_id) else text_id
        item = _item_id(item, f"item id of rating {number} of the link")
        ratings.append(Rating(item, _rating(float(raw_rating), scale, f"rating {number} of the link"), 0.0))
    return _finish(name, dataset_name, ratings, [], dataset, "the link")


# --- the store ------------------------------------------------------------------------------------
def default_profiles_path() -> Path:
    """`$RECENGINE_PROFILES_DB`, else `<user data folder>/profiles.sqlite3`."""
    configured = os.environ.get(PROFILES_DB_ENV)
    return Path(configured).expanduser() if configured else user_data_dir() / "profiles.sqlite3"


Migration = Union[Sequence[str], Callable[[sqlite3.Connection], None]]


def _migrate_v2(conn: sqlite3.Connection) -> None:
    """v1 -> v2: rating order, skipped items, updated_at, names unique ignoring case."""
    conn.execute("ALTER TABLE profiles ADD COLUMN updated_at REAL NOT NULL DEFAULT 0")
    conn.execute("UPDATE profiles SET updated_at = created_at")
    conn.execute("ALTER TABLE ratings ADD COLUMN seq INTEGER NOT NULL DEFAULT 0")
    # v1 kept no order: number each profile's ratings by time, then by insertion (rowid).
    conn.execute(
        "UPDATE ratings SET seq = (SELECT COUNT(*) FROM ratings AS r WHERE r.profile_id = ratings.profile_id AND "
        "(r.rated_at < ratings.rated_at OR (r.rated_at = ratings.rated_at AND r.rowid <= ratings.rowid)))"
    )
    # v1 names were unique by exact case only: rename later clashes "Name (2)", "Name (3)", ...
    rows = conn.execute("SELECT id, dataset, name FROM profiles ORDER BY id").fetchall()
    taken: set[tuple[str, str]] = set()
    for profile_id, dataset, name in rows:
        candidate, n = name, 1
        while (dataset, candidate.lower()) in taken:
            n += 1
            candidate = f"{name[: MAX_NAME_CHARS - 6]} ({n})"
        taken.add((dataset, candidate.lower()))
        if candidate != name:
            conn.execute("UPDATE profiles SET name = ? WHERE id = ?", (candidate, profile_id))
    conn.execute(
        "CREATE TABLE skipped (profile_id INTEGER NOT NULL REFERENCES profiles(id) ON DELETE CASCADE, "
        "item_id NOT NULL, skipped_at REAL NOT NULL, PRIMARY KEY (profile_id, item_id))"
    )
    conn.execute("CREATE UNIQUE INDEX profiles_name_nocase ON profiles (dataset, name COLLATE NOCASE)")
    conn.execute("CREATE INDEX ratings_order ON ratings (profile_id, seq)")


#: MIGRATIONS[v] upgrades a version-v file to version v+1 (v0 = empty file). Item ids are
#: stored in an untyped column, so ints stay ints and text stays text.
MIGRATIONS: tuple[Migration, ...] = (
    (
        "CREATE TABLE profiles (id INTEGER PRIMARY KEY, name TEXT NOT NULL, dataset TEXT NOT NULL, "
        "created_at REAL NOT NULL, UNIQUE (dataset, name))",
        "CREATE TABLE ratings (profile_id INTEGER NOT NULL REFERENCES profiles(id) ON DELETE CASCADE, item_id NOT NULL, "
        "rating REAL NOT NULL, rated_at REAL NOT NULL, PRIMARY KEY (profile_id, item_id))",
    ),
    _migrate_v2,
)
SCHEMA_VERSION = len(MIGRATIONS)


def _busy(error: sqlite3.OperationalError) -> bool:
    text = str(error).lower()
    return "locked" in text or "busy" in text


class ProfileStore:
    """Saved profiles in one SQLite file (see the module docstring for the rules).

    path: the database file (default `default_profiles_path()`); its folder is created.
    busy_timeout: seconds one statement waits for a lock; retry_seconds: how long an operation
    keeps retrying with backoff before `ProfileStoreError`.

    Profiles are referred to by id (`ProfileInfo.id`) or by the `ProfileInfo` itself; `find`
    looks one up by name and dataset. Safe to share between threads and to use from several
    processes at once: each thread (in each process) has its own connection, and every call is
its own transaction.
    """

    def __init__(self, path: str | Path | None = None, *, busy_timeout: float = 5.0, retry_seconds: float = 60.0) -> None:
        if not busy_timeout > 0 or not retry_seconds > 0:
            raise ValueError(f"busy_timeout and retry_seconds must be positive, got {busy_timeout!r} and {retry_seconds!r}")
        self.path = Path(path).expanduser() if path is not None else default_profiles_path()
        self.busy_timeout = float(busy_timeout)
        self.retry_seconds = float(retry_seconds)
        self._jitter = random.Random()
        self._local = threading.local()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._retry(self._set_wal)
        self._run(self._migrate)

    def __repr__(self) -> str:
        return f"<ProfileStore {self.path}>"

    # --- connections, transactions and retries ----------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        """This thread's connection (one per thread and process, opened on first use).

        Keeping it open matters: closing the last connection checkpoints and removes the WAL,
        an fsync that would make every rating cost tens of milliseconds.
        """
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            return conn
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            conn.close()
            raise
        self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end). The store stays usable."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
        self._local.conn = None

    def _retry(self, operation: Callable[[], T]) -> T:
        """Run `operation`, retrying with jittered exponential backoff while the database is locked."""
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.005
        while True:
            try:
                return operation()
            except sqlite3.OperationalError as error:
                if not _busy(error):
                    raise ProfileStoreError(f"{self.path}: {error}") from None
                if time.monotonic() > deadline:
                    raise ProfileStoreError(f"{self.path} stayed locked for {self.retry_seconds:g}s; try again") from None
                time.sleep(delay * (0.5 + self._jitter.random()))
                delay = min(delay * 2, 0.25)
            except sqlite3.IntegrityError as error:
                raise ProfileStoreError(f"{self.path}: {error}") from None
            except sqlite3.DatabaseError as error:
                raise ProfileStoreError(
                    f"{self.path} is not a usable profiles database ({error}); move it away and a new one is created"
                ) from None

    def _run(self, body: Callable[[sqlite3.Connection], T], *, write: bool = True) -> T:
        """`body(conn)` inside one transaction (BEGIN IMMEDIATE for writes), retried as a whole when locked."""

        def attempt() -> T:
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                result = body(conn)
                conn.execute("COMMIT")
                return result
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

        return self._retry(attempt)

    def _set_wal(self) -> None:
        mode = self._connect().execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise ProfileStoreError(f"{self.path}: cannot switch to WAL mode (got {mode}); is it on a network drive?")

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ProfileStoreError(
                f"{self.path} has schema version {version}, newer than this recengine's {SCHEMA_VERSION}; upgrade recengine"
            )
        for step in range(version, SCHEMA_VERSION):
            migration = MIGRATIONS[step]
            if callable(migration):
                migration(conn)
            else:
                for statement in migration:
                    conn.execute(statement)
        if version != SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")

    def schema_version(self) -> int:
        """The file's `PRAGMA user_version` (SCHEMA_VERSION once opened)."""
        return self._run(lambda conn: conn.execute("PRAGMA user_version").fetchone()[0], write=False)

    # --- profiles -----------------------------------------------------------------------------------
    _INFO = (
        "SELECT p.id, p.name, p.dataset, p.created_at, p.updated_at, "
        "(SELECT COUNT(*) FROM ratings r WHERE r.profile_id = p.id), "
        "(SELECT COUNT(*) FROM skipped s WHERE s.profile_id = p.id) FROM profiles p"
    )

    @staticmethod
    def _id(profile: int | ProfileInfo) -> int:
        if isinstance(profile, ProfileInfo):
            return profile.id
        if isinstance(profile, (int, np.integer)) and not isinstance(profile, bool):
            return int(profile)
        raise ProfileError(f"a profile is given by its id (int) or ProfileInfo, got {profile!r}")

    def _info(self, conn: sqlite3.Connection, profile_id: int) -> ProfileInfo:
        row = conn.execute(f"{self._INFO} WHERE p.id = ?", (profile_id,)).fetchone()
        if row is None:
            raise ProfileNotFoundError(f"no profile with id {profile_id}; it may have been deleted")
        return ProfileInfo(*row)

    def _touch(self, conn: sqlite3.Connection, profile_id: int, at: float) -> None:
        if conn.execute("UPDATE profiles SET updated_at = ? WHERE id = ?", (at, profile_id)).rowcount != 1:
            raise ProfileNotFoundError(f"no profile with id {profile_id}; it may have been deleted")

    def _insert_profile(self, conn: sqlite3.Connection, name: str, dataset: str) -> int:
        clash = conn.execute("SELECT name FROM profiles WHERE dataset = ? AND name = ? COLLATE NOCASE", (dataset, name)).fetchone()
        if clash:
            raise ProfileExistsError(f"a profile called {clash[0]!r} already exists on {dataset}; choose another name")
        now = time.time()
        cursor = conn.execute("INSERT INTO profiles (name, dataset, created_at, updated_at) VALUES (?, ?, ?, ?)", (name, dataset, now, now))
        return int(cursor.lastrowid)

    def create(self, name: str, dataset: str) -> ProfileInfo:
        """A new empty profile; ProfileError for a bad name, ProfileExistsError when the dataset has one of that name."""
        name, dataset = validate_profile_name(name), _dataset_name(dataset)
        return self._run(lambda conn: self._info(conn, self._insert_profile(conn, name, dataset)))

    def get(self, profile: int | ProfileInfo) -> ProfileInfo:
        """The profile's current info (ProfileNotFoundError when it is gone)."""
        profile_id = self._id(profile)
        return self._run(lambda conn: self._info(conn, profile_id), write=False)

    def find(self, name: str, dataset: str) -> ProfileInfo:
        """The profile called `name` (ignoring ASCII case) on `dataset`; ProfileNotFoundError otherwise."""
        name, dataset = validate_profile_name(name), _dataset_name(dataset)

        def body(conn: sqlite3.Connection) -> ProfileInfo:
            row = conn.execute(f"{self._INFO} WHERE p.dataset = ? AND p.name = ? COLLATE NOCASE", (dataset, name)).fetchone()
            if row is None:
                raise ProfileNotFoundError(f"no profile called {name!r} on {dataset}")
            return ProfileInfo(*row)

        return self._run(body, write=False)

    def list_profiles(self, dataset: str | None = None) -> list[ProfileInfo]:
        """Every profile (of `dataset` when given), most recently changed first."""
        where, args = ("WHERE p.dataset = ?", (_dataset_name(dataset),)) if dataset is not None else ("", ())
        rows = self._run(lambda conn: conn.execute(f"{self._INFO} {where} ORDER BY p.updated_at DESC, p.id DESC", args).fetchall(), write=False)
        return [ProfileInfo(*row) for row in rows]

    def rename(self, profile: int | ProfileInfo, new_name: str) -> ProfileInfo:
        """Give the profile another name (same rules as `create`)."""
        profile_id, new_name = self._id(profile), validate_profile_name(new_name)

        def body(conn: sqlite3.Connection) -> ProfileInfo:
            info = self._info(conn, profile_id)
            clash = conn.execute(
                "SELECT name FROM profiles WHERE dataset = ? AND name = ? COLLATE NOCASE AND id != ?", (info.dataset, new_name, profile_id)
            ).fetchone()
            if clash:
                raise ProfileExistsError(f"a profile called {clash[0]!r} already exists on {info.dataset}; choose another name")
            conn.execute("UPDATE profiles SET name = ?, updated_at = ? WHERE id = ?", (new_name, time.time(), profile_id))
            return self._info(conn, profile_id)

        return self._run(body)

    def delete(self, profile: int | ProfileInfo) -> None:
        """Delete the profile with its ratings and skips (ProfileNotFoundError when it is gone)."""
        profile_id = self._id(profile)

        def body(conn: sqlite3.Connection) -> None:
            if conn.execute("DELETE FROM profiles WHERE id = ?", (profile_id,)).rowcount != 1:
                raise ProfileNotFoundError(f"no profile with id {profile_id}; it may have been deleted")

        self._run(body)

    # --- ratings ------------------------------------------------------------------------------------
    def rate(
        self, profile: int | ProfileInfo, item_id: ItemId, rating: float, at: float | None = None, *, scale: Sequence[float] = DEFAULT_SCALE
    ) -> None:
        """Record (or change) a rating at once; the item is no longer skipped.

        item_id: the ORIGINAL id (`item_id_of(dataset, item_idx)`); rating: on `scale`
        (pass `dataset.rating_scale`) in 0.5 steps; at: seconds since the epoch (default now).
        A new item goes to the end of the order; a changed rating keeps its place.
        """
        profile_id, item = self._id(profile), _item_id(item_id)
        value = _rating(rating, (float(scale[0]), float(scale[1])))
        when = time.time() if at is None else _timestamp(at, "at")

        def body(conn: sqlite3.Connection) -> None:
            self._touch(conn, profile_id, when)
            conn.execute("DELETE FROM skipped WHERE profile_id = ? AND item_id = ?", (profile_id, item))
            conn.execute(
                "INSERT INTO ratings (profile_id, item_id, rating, rated_at, seq) VALUES (?, ?, ?, ?, "
                "(SELECT COALESCE(MAX(seq), 0) + 1 FROM ratings WHERE profile_id = ?)) "
                "ON CONFLICT (profile_id, item_id) DO UPDATE SET rating = excluded.rating, rated_at = excluded.rated_at",
                (profile_id, item, value, when, profile_id),
            )

        self._run(body)

    def unrate(self, profile: int | ProfileInfo, item_id: ItemId) -> bool:
        """Forget a rating; True when there was one."""
        profile_id, item = self._id(profile), _item_id(item_id)

        def body(conn: sqlite3.Connection) -> bool:
            self._touch(conn, profile_id, time.time())
            return conn.execute("DELETE FROM ratings WHERE profile_id = ? AND item_id = ?", (profile_id, item)).rowcount == 1

        return self._run(body)

    def skip(self, profile: int | ProfileInfo, item_id: ItemId, at: float | None = None) -> None:
        """Mark an item "not seen" (forgetting any rating of it)."""
        profile_id, item = self._id(profile), _item_id(item_id)
        when = time.time() if at is None else _timestamp(at, "at")

        def body(conn: sqlite3.Connection) -> None:
            self._touch(conn, profile_id, when)
            conn.execute("DELETE FROM ratings WHERE profile_id = ? AND item_id = ?", (profile_id, item))
            conn.execute("INSERT OR REPLACE INTO skipped (profile_id, item_id, skipped_at) VALUES (?, ?, ?)", (profile_id, item, when))

        self._run(body)

    def unskip(self, profile: int | ProfileInfo, item_id: ItemId) -> bool:
        """Take an item off the skipped list; True when it was on it."""
        profile_id, item = self._id(profile), _item_id(item_id)

        def body(conn: sqlite3.Connection) -> bool:
            self._touch(conn, profile_id, time.time())
            return conn.execute("DELETE FROM skipped WHERE profile_id = ? AND item_id = ?", (profile_id, item)).rowcount == 1

        return self._run(body)

    def clear(self, profile: int | ProfileInfo) -> None:
        """Forget every rating and skip of the profile (the app's "start over")."""
        profile_id = self._id(profile)

        def body(conn: sqlite3.Connection) -> None:
            self._touch(conn, profile_id, time.time())
            conn.execute("DELETE FROM ratings WHERE profile_id = ?", (profile_id,))
            conn.execute("DELETE FROM skipped WHERE profile_id = ?", (profile_id,))

        self._run(body)

    def ratings(self, profile: int | ProfileInfo) -> list[Rating]:
        """The profile's ratings in the order rated."""
        return list(self.load(profile).ratings)

    def load(self, profile: int | ProfileInfo) -> ProfileData:
        """Everything the profile holds (one consistent read): name, dataset, ratings in order, skipped items."""
        profile_id = self._id(profile)

        def body(conn: sqlite3.Connection) -> ProfileData:
            info = self._info(conn, profile_id)
            rows = conn.execute("SELECT item_id, rating, rated_at FROM ratings WHERE profile_id = ? ORDER BY seq, rowid", (profile_id,))
            ratings = tuple(Rating(*row) for row in rows)
            skipped = tuple(row[0] for row in conn.execute("SELECT item_id FROM skipped WHERE profile_id = ? ORDER BY skipped_at, rowid", (profile_id,)))
            return ProfileData(info.name, info.dataset, ratings, skipped)

        return self._run(body, write=False)

    def import_profile(self, data: ProfileData, *, name: str | None = None, replace: bool = False) -> ProfileInfo:
        """Save validated `ProfileData` as a profile in one transaction (all or nothing).

        name: overrides `data.name`. When a profile of that name exists on the dataset:
        ProfileExistsError, unless `replace`, which swaps its ratings and skips for these.
        """
        name = validate_profile_name(name if name is not None else data.name)
        dataset = _dataset_name(data.dataset)
        ratings = [(_item_id(r.item_id), _rating(r.rating, (0.0, 1e9)), _timestamp(r.rated_at)) for r in data.ratings]
        skipped = [_item_id(s) for s in data.skipped]
        if len({r[0] for r in ratings}) != len(ratings):
            raise ProfileError("the profile rates an item twice; parse it with parse_profile_json/csv, which keep the last")

        def body(conn: sqlite3.Connection) -> ProfileInfo:
            row = conn.execute("SELECT id FROM profiles WHERE dataset = ? AND name = ? COLLATE NOCASE", (dataset, name)).fetchone()
            if row is not None and not replace:
                raise ProfileExistsError(f"a profile called {name!r} already exists on {dataset}; choose another name or replace it")
            if row is not None:
                profile_id = row[0]
                conn.execute("DELETE FROM ratings WHERE profile_id = ?", (profile_id,))
                conn.execute("DELETE FROM skipped WHERE profile_id = ?", (profile_id,))
                self._touch(conn, profile_id, time.time())
            else:
                profile_id = self._insert_profile(conn, name, dataset)
            conn.executemany(
                "INSERT INTO ratings (profile_id, item_id, rating, rated_at, seq) VALUES (?, ?, ?, ?, ?)",
                [(profile_id, item, value, when, seq) for seq, (item, value, when) in enumerate(ratings, 1)],
            )
            now = time.time()
            conn.executemany(
                "INSERT OR REPLACE INTO skipped (profile_id, item_id, skipped_at) VALUES (?, ?, ?)",
                [(profile_id, item, now) for item in skipped],
            )
            return self._info(conn, profile_id)

        return self._run(body)

    def export(self, profile: int | ProfileInfo, path: str | Path, format: str | None = None, *, dataset: Dataset | None = None) -> Path:
        """Write the profile to `path` as JSON or CSV, atomically (see `write_profile_file`)."""
        return write_profile_file(self.load(profile), path, format, dataset=dataset)
