"""`Dataset`: one ratings table over contiguous user and item indices, plus the item catalogue.

Orientation is users x items everywhere. Raw ids (MovieLens `userId`/`movieId`, or any
string id of an uploaded file) appear only in the id maps; every array inside uses the
contiguous indices `0..n_users-1` and `0..n_items-1`.

A split (`recengine.data.splits`) yields Datasets that share the parent's id maps and
catalogue, so indices mean the same thing in train, test and the full data.
"""

from __future__ import annotations

import numbers
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from scipy import sparse

__all__ = ["Dataset", "IdMap", "CATALOGUE_COLUMNS", "display_title", "parse_title", "make_catalogue", "rated_matrix"]

#: Columns of `Dataset.catalogue` (one row per item index, in index order).
CATALOGUE_COLUMNS = ("item_id", "title", "display_title", "year", "genres", "popularity", "mean_rating")

_YEAR_AT_END = re.compile(r"\s*\((\d{4})(?:[-–]\d{0,4})?\)\s*$")


def parse_title(title: str) -> tuple[str, int | None]:
    """Split "Matrix, The (1999)" into ("Matrix, The", 1999); titles without a year give None."""
    match = _YEAR_AT_END.search(title)
    if not match:
        return title.strip(), None
    return title[: match.start()].strip(), int(match.group(1))


def display_title(title: str) -> str:
    """The title as a person writes it: "Matrix, The (1999)" -> "The Matrix (1999)".

    The trailing article MovieLens moves to the end is put back in front, also inside an
    alternative title in parentheses ("City of Lost Children, The (Cité des enfants perdus, La) (1995)"
    keeps its parenthesised parts and becomes "The City of Lost Children (...) (1995)").
    """
    name, year = parse_title(title)
    # Peel parenthesised alternatives ("Seven (a.k.a. Se7en)") off the end, fix the main part.
    alternatives = ""
    main = name
    while main.endswith(")") and "(" in main:
        start = main.rfind(" (")
        if start <= 0:
            break
        alternatives = main[start:] + alternatives
        main = main[:start]
    for article in ("The", "A", "An", "Les", "La", "Le", "L'", "Il", "Das", "Der", "Die", "El", "Los", "Las"):
        suffix = f", {article}"
        if main.endswith(suffix):
            separator = "" if article.endswith("'") else " "
            main = f"{article}{separator}{main[: -len(suffix)]}"
            break
    shown = main + alternatives
    return f"{shown} ({year})" if year is not None else shown


@dataclass(frozen=True, eq=False)
class IdMap:
    """Bidirectional map between raw ids and contiguous indices `0..len-1`.

    `ids[index]` is the raw id; `index_of(raw)` and `indices_of(raws)` go the other way.
    Raw ids are a numpy array (int64 for MovieLens, str for uploads).
    """

    ids: np.ndarray

    def __post_init__(self) -> None:
        ordered = np.sort(self.ids, kind="stable")
        if len(ordered) > 1 and bool((ordered[1:] == ordered[:-1]).any()):
            raise ValueError("IdMap ids must be unique")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def _lookup(self) -> dict:
        lookup = self.__dict__.get("_lookup_cache")
        if lookup is None:
            lookup = {raw: index for index, raw in enumerate(self.ids.tolist())}
            object.__setattr__(self, "_lookup_cache", lookup)
        return lookup

    def __contains__(self, raw: object) -> bool:
        return raw in self._lookup

    def index_of(self, raw: object) -> int:
        """Index of one raw id; KeyError naming the id when it is unknown."""
        try:
            return self._lookup[raw]
        except KeyError:
            raise KeyError(f"unknown id {raw!r}") from None

    def indices_of(self, raws: Sequence | np.ndarray) -> np.ndarray:
        """Indices of many raw ids (int64 array); -1 where an id is unknown."""
        raws = np.asarray(raws)
        if raws.size == 0:
            return np.zeros(0, dtype=np.int64)
        if np.issubdtype(self.ids.dtype, np.integer) and np.issubdtype(raws.dtype, np.integer):
            order = np.argsort(self.ids, kind="stable")
            sorted_ids = self.ids[order]
            pos = np.clip(np.searchsorted(sorted_ids, raws), 0, len(sorted_ids) - 1)
            found = sorted_ids[pos] == raws
            return np.where(found, order[pos], -1).astype(np.int64)
        lookup = self._lookup
        return np.fromiter((lookup.get(r, -1) for r in raws.tolist()), dtype=np.int64, count=raws.size)


def make_catalogue(
    item_ids: np.ndarray,
    titles: Sequence[str] | None,
    genres: Sequence[Sequence[str]] | None,
    items: np.ndarray,
    ratings: np.ndarray,
    years: Sequence[int | None] | None = None,
) -> pd.DataFrame:
    """Build the item catalogue for contiguous item indices (row i describes item i).

    `titles`/`genres`/`years` are aligned with `item_ids`; missing titles become "Item <id>".
    `popularity` (number of ratings) and `mean_rating` are computed from `items`/`ratings`.
    """
    n_items = len(item_ids)
    if titles is None:
        titles = [f"Item {raw}" for raw in item_ids.tolist()]
    titles = [str(t) for t in titles]
    parsed = [parse_title(t) for t in titles]
    if years is None:
        years = [year for _, year in parsed]
    popularity = np.bincount(items, minlength=n_items).astype(np.int64)
    sums = np.bincount(items, weights=ratings.astype(np.float64), minlength=n_items)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_rating = np.where(popularity > 0, sums / np.maximum(popularity, 1), np.nan)
    return pd.DataFrame(
        {
            "item_id": item_ids,
            "title": titles,
            "display_title": [display_title(t) for t in titles],
            "year": pd.array([None if y is None or (isinstance(y, float) and np.isnan(y)) else int(y) for y in years], dtype="Int64"),
            "genres": [tuple(g) for g in genres] if genres is not None else [()] * n_items,
            "popularity": popularity,
            "mean_rating": mean_rating.astype(np.float32),
        }
    )


@dataclass(frozen=True, eq=False)
class Dataset:
    """Ratings over contiguous indices plus the item catalogue.

    Arrays (all of length `n_interactions`):
      users: int32 user indices; items: int32 item indices;
      ratings: float32 ratings; timestamps: int64 seconds since the epoch (0 when unknown).
    `user_map` / `item_map` translate indices to raw ids and back; `catalogue` has one row per
    item index with `CATALOGUE_COLUMNS`. `rating_scale` is (lowest, highest) allowed rating.
    `source` is the folder the data was read from (None for synthetic or uploaded data); the
    canonical ml-100k folds are read from there.
    """

    name: str
    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray
    user_map: IdMap
    item_map: IdMap
    catalogue: pd.DataFrame
    rating_scale: tuple[float, float] = (0.5, 5.0)
    source: Path | None = None
    part: str = "all"
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.users)
        for label, array in (("items", self.items), ("ratings", self.ratings), ("timestamps", self.timestamps)):
            if len(array) != n:
                raise ValueError(f"Dataset arrays differ in length: users has {n}, {label} has {len(array)}")
        if len(self.catalogue) != len(self.item_map):
            raise ValueError(f"catalogue has {len(self.catalogue)} rows for {len(self.item_map)} items")
        if n:
            if self.users.min() < 0 or self.users.max() >= len(self.user_map):
                raise ValueError("user indices out of range of the user map")
            if self.items.min() < 0 or self.items.max() >= len(self.item_map):
                raise ValueError("item indices out of range of the item map")

    @classmethod
    def from_arrays(
        cls,
        name: str,
        users: np.ndarray,
        items: np.ndarray,
        ratings: np.ndarray,
        timestamps: np.ndarray | None = None,
        *,
        user_map: IdMap,
        item_map: IdMap,
        catalogue: pd.DataFrame | None = None,
        rating_scale: tuple[float, float] = (0.5, 5.0),
        source: Path | None = None,
    ) -> "Dataset":
        """Build a Dataset from index arrays, casting dtypes and filling a default catalogue."""
        users = np.ascontiguousarray(users, dtype=np.int32)
        items = np.ascontiguousarray(items, dtype=np.int32)
        ratings = np.ascontiguousarray(ratings, dtype=np.float32)
        timestamps = (
            np.zeros(len(users), dtype=np.int64) if timestamps is None else np.ascontiguousarray(timestamps, dtype=np.int64)
        )
        if catalogue is None:
            catalogue = make_catalogue(item_map.ids, None, None, items, ratings)
        return cls(name, users, items, ratings, timestamps, user_map, item_map, catalogue, rating_scale, source)

    # --- sizes and printing -------------------------------------------------------------------
    @property
    def n_users(self) -> int:
        return len(self.user_map)

    @property
    def n_items(self) -> int:
        return len(self.item_map)

    def __len__(self) -> int:
        return len(self.users)

    def __repr__(self) -> str:
        part = "" if self.part == "all" else f" [{self.part}]"
        return f"<Dataset {self.name}{part} ({self.n_users} users x {self.n_items} items x {len(self)} ratings)>"

    # --- derived views ------------------------------------------------------------------------
    def subset(self, mask_or_index: np.ndarray, part: str) -> "Dataset":
        """The same users, items and catalogue, keeping only the selected interactions."""
        pick = np.asarray(mask_or_index)
        return Dataset(
            self.name,
            self.users[pick],
            self.items[pick],
            self.ratings[pick],
            self.timestamps[pick],
            self.user_map,
            self.item_map,
            self.catalogue,
            self.rating_scale,
            self.source,
            part,
        )

    def user_item_csr(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Interactions grouped by user: (indptr int64 (n_users+1), items int32, ratings float32).

        The items of user u are `items[indptr[u]:indptr[u+1]]`, sorted by item index.
        Computed once and cached (the Dataset is immutable).
        """
        cached = self._cache.get("csr")
        if cached is None:
            # one argsort of packed (user, item) keys: far faster than lexsort at tens of millions
            keys = self.users.astype(np.int64) * max(self.n_items, 1) + self.items
            order = np.argsort(keys, kind="stable")
            counts = np.bincount(self.users, minlength=self.n_users)
            indptr = np.zeros(self.n_users + 1, dtype=np.int64)
            np.cumsum(counts, out=indptr[1:])
            cached = (indptr, self.items[order], self.ratings[order])
            self._cache["csr"] = cached
        return cached

    def items_of(self, user: int) -> np.ndarray:
        """Item indices user `user` interacted with (sorted)."""
        indptr, items, _ = self.user_item_csr()
        return items[indptr[user] : indptr[user + 1]]

    def item_popularity(self) -> np.ndarray:
        """Number of interactions per item index in *this* part of the data (int64, n_items)."""
        return np.bincount(self.items, minlength=self.n_items).astype(np.int64)

    def titles(self, item_index: Sequence[int] | np.ndarray) -> list[str]:
        """Display titles of item indices."""
        return self.catalogue["display_title"].to_numpy()[np.asarray(item_index, dtype=np.int64)].tolist()

    def to_frame(self) -> pd.DataFrame:
        """The interactions as a DataFrame with raw ids (for export and inspection)."""
        return pd.DataFrame(
            {
                "user_id": self.user_map.ids[self.users],
                "item_id": self.item_map.ids[self.items],
                "rating": self.ratings,
                "timestamp": self.timestamps,
            }
        )


def rated_matrix(indptr: np.ndarray, items: np.ndarray, n_items: int, max_items: int) -> tuple[sparse.csr_matrix, np.ndarray, np.ndarray]:
    """Who has rated which of the most-rated items, from a users x items CSR pattern.

    indptr (n_users + 1,) and items (nnz,) int; repeated (user, item) pairs count once. Returns
    (seen, pool, counts): counts int64 (n_items,) the users per item; pool int64 the up to
    `max_items` most-rated items (ties by index) that anyone rated, ascending; seen a 0/1 float64
    CSR matrix (n_users, len(pool)) of the pool's columns. ValueError for a max_items below 1.
    """
    from scipy import sparse  # installed with scikit-learn; loaded only when needed

    if isinstance(max_items, bool) or not isinstance(max_items, numbers.Integral) or max_items < 1:
        raise ValueError(f"max_items must be a positive integer, got {max_items!r}")
    indptr, items = np.asarray(indptr, dtype=np.int64), np.asarray(items, dtype=np.int64)
    users = np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr))
    pairs = np.unique(users * n_items + items)
    users, items = pairs // n_items, pairs % n_items
    counts = np.bincount(items, minlength=n_items)
    pool = np.sort(np.argsort(-counts, kind="stable")[: int(max_items)])
    pool = pool[counts[pool] > 0]
    position = np.full(n_items, -1, dtype=np.int64)
    position[pool] = np.arange(len(pool))
    inside = position[items] >= 0
    seen = sparse.csr_matrix((np.ones(int(inside.sum())), (users[inside], position[items[inside]])), shape=(len(indptr) - 1, len(pool)))
    return seen, pool, counts
