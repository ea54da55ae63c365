"""Recommendations for a profile of ratings, with the reasons behind each one.

This is what the recommendation pages call: a person's ratings `{item_idx: rating}` are folded
into the model (`Recommender.fold_in`, no retraining), every item is scored at once, filters,
a novelty penalty and a diversity re-ranking are applied, and each recommendation carries the
ratings that pushed it up.

Reasons are in the units of the model's score (stars for explicit models). They are exact
when the model can attribute its score (`Recommender.explain` returns a list, e.g. matrix
factorisation whose fold-in is linear in the ratings): the contributions then add up to
`score(i | ratings) - score(i | no ratings)` (see `_in_score_units` for models that attribute
a pre-activation score). Otherwise they come from leave-one-out re-scoring: the contribution
of rating j to item i is `score(i | all ratings) - score(i | all ratings but j)`, computed with
one fold-in per rated item for all recommended items at once (these need not add up to
anything). `Recommendation.exact_reasons` says which was used.

The order of the list is not the model's score alone. `recommend_profile` sorts by
`ranking_values`, a weighted sum of three signals, each standardised over the candidates:

* the model's score: how much the person would like the movie (weight 1);
* the co-watch score (`CoWatch`, weight `co_watch`): how likely someone who has seen the rated
  movies is to have seen this one, learned from who rated what in the model's training data.
  A rating model answers "how much would they like it", not "would they watch it"; the lists
  are judged (and used) on the second, and a few ratings say far more about it through
  co-watching than through the latent taste vector;
* the seen score (`seen_scores`, weight `seen`): the log chance that the person has seen the
  movie given *all* their onboarding answers, "haven't seen" ones included
  (`recengine.onboarding.Questioner`). Where co-watch only hears what was rated, this also
  hears what was skipped: someone who has not seen any of the horror films asked about is
  unlikely to watch the next one. A skipped movie's own answer is left out of its estimate
  (see below for what happens to the movie itself);
* log popularity rank (weight `novelty`): the prior of being watched at all.

Movies the person passed over (`not_seen`: marked "haven't seen", or offered by the onboarding
page and left unrated) are hidden from the list by default, like the rated ones
(`hide_not_seen`). A passed-over movie was put in front of the person and not taken: either
they have seen it and did not rate it, and recommending it is useless, or they know of it and
have not watched it, which makes them unlikely to watch it next (the usual reading of an
impression without engagement). On validation users hiding them lifts NDCG@10 after ten
onboarding answers from 0.656 to 0.709 (`benchmarks/onboarding.py --tune`). The pages offer a
switch to show them again; the seen score then ranks each by the *other* answers, so a skip
never buries its own movie.

The three signals besides the model's score are the same for every model family (they come
from who rated what in the training data), so the model's score is what a model comparison
compares. The weights were chosen on validation users (`benchmarks/onboarding.py --tune`); the score
shown beside each movie (`Recommendation.score`, `predicted_rating`) is the model's alone.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Collection, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from recengine.data.dataset import Dataset, rated_matrix
from recengine.caching import PerModelCache
from recengine.models.base import Recommender
from recengine.onboarding import GOOD_PROFILE_SIZE, Questioner, item_indices

__all__ = [
    "CO_WATCH_MAX_ITEMS",
    "CO_WATCH_RANGE",
    "CO_WATCH_REGULARIZATION",
    "CoWatch",
    "DEFAULT_CO_WATCH",
    "DEFAULT_SEEN",
    "SEEN_RANGE",
    "co_watch_scores",
    "seen_scores",
    "GENRE_MATCHES",
    "Reason",
    "Recommendation",
    "RecommendationFilter",
    "THIN_OVERLAP",
    "DEFAULT_MIN_RATINGS",
    "DEFAULT_NOVELTY",
    "NOVELTY_RANGE",
    "compare_models",
    "generic_overlap",
    "popularity_overlap",
    "popularity_ranking",
    "profile_is_thin",
    "ranking_values",
    "recommend_profile",
    "similar_to",
]

#: How `RecommendationFilter.genres` combine: an item needs any one of them, or all of them.
GENRE_MATCHES = ("any", "all")
#: Share of a list's top k that may coincide with the popularity top k, or with the list for
#: someone with no ratings, before `profile_is_thin` flags it as generic. (ml-100k, matrix
#: factorisation, held-out users of `benchmarks/onboarding.py`, the page's default ranking,
#: passed-over movies hidden: after 10 onboarding answers both overlaps of the top 10 have
#: median 0.4 and 90th percentile 0.67-0.7, and 11-15% of the users exceed 0.6; after 5 answers
#: 0.45-0.5 and 0.7-0.77, 17-28%; after 20 answers 0.2-0.3 and 0.5-0.6, 2-7%.)
THIN_OVERLAP = 0.6
#: Allowed values of `recommend_profile`'s signed popularity weight `novelty`.
NOVELTY_RANGE = (-1.0, 1.0)
#: The default `novelty`: a rating model predicts how much a person would like a movie, not
#: whether they would watch it, so on its own it ranks obscure movies with a few glowing
#: ratings high. The seen term (`DEFAULT_SEEN`) weighs in the prior of being watched (with no
#: answers it is the share of people who saw the movie), strongly; a slightly positive novelty
#: takes back part of its pull towards blockbusters. Before the seen term, the tuned novelty
#: was -0.5, the same prior by another route. Chosen with `DEFAULT_CO_WATCH`, see there.
DEFAULT_NOVELTY = 0.25
#: Default floor on a movie's number of ratings on the recommendation page (few ratings give
#: noisy predictions); `RecommendationFilter(min_ratings=DEFAULT_MIN_RATINGS)`.
DEFAULT_MIN_RATINGS = 20
#: MMR re-ranks at most this many of the best candidates (or 5 * k when larger).
MMR_POOL = 200
#: Allowed values of `recommend_profile`'s co-watch weight `co_watch` (0 = the model alone).
CO_WATCH_RANGE = (0.0, 4.0)
#: The default `co_watch` weight (in units of the model score's weight, 1). Chosen with
#: `DEFAULT_NOVELTY` and `CO_WATCH_REGULARIZATION` by `benchmarks/onboarding.py --tune` on
#: validation users carved out of the training users (never the held-out test users): matrix
#: factorisation on ml-100k, best mean NDCG@10 over k = 0, 5, 10, 20 revealed ratings of two
#: kinds of newcomer, one answering the onboarding questions and one rating random movies of
#: theirs (as through search). With the fixed question order: 0.518 at (lambda 400, co_watch 1,
#: novelty -0.5) against 0.462 for the best without co-watch and 0.448 for co_watch 0, novelty
#: -0.25. Re-tuned for the adaptive questions (`next_questions`) on a small grid around those:
#: 0.582 at (lambda 800, co_watch 1, novelty -0.5), 0.579 at lambda 400 (the best of co_watch
#: 0.75-1.5 x novelty -0.75..-0.25 there, all 0.568-0.579), 0.572 at lambda 200, 0.493 without
#: co-watch; at k=10 onboarding answers 0.555, 1.59x popularity's (0.558 at lambda 400).
#: Re-tuned with the seen term (`DEFAULT_SEEN`) on lambda 400, 800 x co_watch 0.5, 1 x seen 0, 1,
#: 2, 3 x its ridge 1, 3, 10 x novelty -0.5..0.5: 0.6075 at (lambda 800, co_watch 0.5, seen 3,
#: ridge 3, novelty +0.25) against 0.5846 for the best without it (lambda 800, co_watch 1,
#: novelty -0.5); at k=10 onboarding answers 0.620, 1.77x popularity's (0.564 without). The
#: questions were re-tuned twice since (`DEFAULT_QUESTIONS`); `--tune` kept these weights both
#: times (mean 0.6115, then 0.6219). With hiding the passed-over movies on the grid
#: (`recommend_profile(hide_not_seen=)`) they are still the best: 0.6459, against 0.6219 with
#: those movies listed.
DEFAULT_CO_WATCH = 0.5
#: Allowed values of `recommend_profile`'s seen weight `seen` (0 = no seen term).
SEEN_RANGE = (0.0, 4.0)
#: The default `seen` weight (in units of the model score's weight, 1): see `seen_scores`.
#: Chosen with `DEFAULT_CO_WATCH`, `DEFAULT_NOVELTY` and `recengine.onboarding.RANKING_RIDGE` by
#: `benchmarks/onboarding.py --tune` on validation users (figures at `DEFAULT_CO_WATCH`). 3 is
#: the top of the grid on purpose: heavier weights scored within 0.01 in a wider search (0.615
#: at seen 10, ridge 10, novelty +1.5, on the same 85 users) but leave the model's score a
#: tenth of the say, and then the list hardly changes with the model, which defeats comparing
#: models; at 3 it keeps about a fifth.
DEFAULT_SEEN = 3.0
#: Ridge weight of `CoWatch` (EASE's lambda), in co-ratings (see `DEFAULT_CO_WATCH`).
CO_WATCH_REGULARIZATION = 800.0
#: `CoWatch` learns weights among at most this many of the most-rated items (cost grows with
#: its cube); 2,000 covers every movie above `DEFAULT_MIN_RATINGS` on ml-100k and ml-latest-small.
CO_WATCH_MAX_ITEMS = 2000


@dataclass(frozen=True)
class RecommendationFilter:
    """Which catalogue items may be recommended.

    genres: keep items having any (`genre_match="any"`) or all (`"all"`) of these genres;
        empty keeps every item.
    year_range: (first, last) release years, inclusive; items of unknown year are dropped
        when a range is set. None keeps every year.
    min_ratings: keep items with at least this many ratings (catalogue `popularity`).
    genre_match: "any" or "all", see `genres`.
    """

    genres: tuple[str, ...] = ()
    year_range: tuple[int, int] | None = None
    min_ratings: int = 0
    genre_match: str = "any"

    def __post_init__(self) -> None:
        genres = (self.genres,) if isinstance(self.genres, str) else tuple(self.genres)
        if not all(isinstance(genre, str) for genre in genres):
            raise ValueError(f"genres must be a tuple of genre names, got {self.genres!r}")
        object.__setattr__(self, "genres", genres)
        if self.year_range is not None:
            try:
                first, last = self.year_range
            except (TypeError, ValueError):
                raise ValueError(f"year_range must be (first, last) years or None, got {self.year_range!r}") from None
            if not all(isinstance(y, numbers.Integral) and not isinstance(y, bool) for y in (first, last)) or first > last:
                raise ValueError(f"year_range must be two integer years with first <= last, got {self.year_range!r}")
            object.__setattr__(self, "year_range", (int(first), int(last)))
        if isinstance(self.min_ratings, bool) or not isinstance(self.min_ratings, numbers.Integral) or self.min_ratings < 0:
            raise ValueError(f"min_ratings must be a non-negative integer, got {self.min_ratings!r}")
        if self.genre_match not in GENRE_MATCHES:
            raise ValueError(f"genre_match must be one of {GENRE_MATCHES}, got {self.genre_match!r}")

    @property
    def is_empty(self) -> bool:
        """True when the filter keeps every item."""
        return not self.genres and self.year_range is None and self.min_ratings == 0

    def mask(self, catalogue: pd.DataFrame) -> np.ndarray:
        """Boolean array (len(catalogue),): True for the items this filter keeps."""
        keep = np.ones(len(catalogue), dtype=bool)
        if self.genres:
            wanted = set(self.genres)
            if self.genre_match == "any":
                hits = [not wanted.isdisjoint(genres) for genres in catalogue["genres"]]
            else:
                hits = [wanted.issubset(genres) for genres in catalogue["genres"]]
            keep &= np.fromiter(hits, dtype=bool, count=len(catalogue))
        if self.year_range is not None:
            years = catalogue["year"].astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
            first, last = self.year_range
            with np.errstate(invalid="ignore"):
                keep &= (years >= first) & (years <= last)
        if self.min_ratings:
            keep &= catalogue["popularity"].to_numpy() >= self.min_ratings
        return keep


@dataclass(frozen=True)
class Reason:
    """One of the person's ratings and how much it adds to a recommendation's score (score units)."""

    item_idx: int
    title: str
    rating: float
    contribution: float


@dataclass(frozen=True)
class Recommendation:
    """One recommended item.

    score: the model's score for the person (a predicted rating for explicit models),
        before the co-watch, novelty and diversity re-ranking that decided its position.
    predicted_rating: `score` clipped to the rating scale for explicit models, else None.
    reasons: the person's ratings, largest contribution first (see the module docstring).
    exact_reasons: True when the model attributed the score exactly (`explain`), False for
        leave-one-out re-scoring.
    """

    item_idx: int
    title: str
    year: int | None
    genres: tuple[str, ...]
    score: float
    predicted_rating: float | None
    reasons: list[Reason] = field(default_factory=list)
    exact_reasons: bool = False


# --- helpers ----------------------------------------------------------------------------------
def _check_catalogue(model: Recommender, catalogue: pd.DataFrame) -> None:
    model._check_fitted()
    if len(catalogue) != model.n_items:
        raise ValueError(
            f"catalogue has {len(catalogue)} items but the model knows {model.n_items}; "
            "pass the catalogue of the dataset the model was trained on"
        )


def _check_range(name: str, value: float, bounds: tuple[float, float]) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number between {bounds[0]:g} and {bounds[1]:g}, got {value!r}")
    value = float(value)
    if not bounds[0] <= value <= bounds[1]:
        raise ValueError(f"{name} must be between {bounds[0]:g} and {bounds[1]:g}, got {value!r}")
    return value


# --- co-watch: what people who saw the same movies also saw ----------------------------------
class CoWatch:
    """Item-to-item co-watch weights learned from who rated what (EASE, Steck 2019).

    X is the binary users x items matrix of the training data ("has rated", whatever the
    rating), restricted to the `max_items` most-rated items (the pool; ties to the lower index).
    The weights B (pool x pool) minimise `|X - X B|^2 + regularization * |B|^2` with a zero
    diagonal, whose closed form is `B = -P / diag(P)` (column-wise) with
    `P = (X^T X + regularization * I)^-1`: column j is a ridge regression of "has seen j" on
    "has seen each other movie". A profile's co-watch score of item j is `sum_{i rated} B[i, j]`,
    how strongly the rated movies predict that the person has also seen j, whatever they thought
    of them. Items outside the pool score 0.

    Building costs one pool x pool Gram matrix (a sparse product) and one Cholesky inverse
    (about 0.5 s for ml-100k's 1,682 items on one core); scoring a profile is a sum of rows.
    `of_model` builds it once per model and keeps it beside the model, never in it (models
    shared through `st.cache_resource` are not mutated).
    """

    def __init__(self, pool: np.ndarray, weights: np.ndarray, n_items: int) -> None:
        """pool: (p,) int64 item indices; weights: (p, p) float32 B; n_items: catalogue size."""
        self.pool = np.asarray(pool, dtype=np.int64)
        self.weights = np.asarray(weights, dtype=np.float32)
        self.n_items = int(n_items)
        self.position = np.full(self.n_items, -1, dtype=np.int64)
        self.position[self.pool] = np.arange(len(self.pool))

    def __repr__(self) -> str:
        return f"<CoWatch over {len(self.pool)} of {self.n_items} items>"

    @classmethod
    def from_interactions(
        cls,
        indptr: np.ndarray,
        items: np.ndarray,
        n_items: int,
        regularization: float = CO_WATCH_REGULARIZATION,
        max_items: int = CO_WATCH_MAX_ITEMS,
    ) -> CoWatch:
        """Fit from a users x items CSR pattern: indptr (n_users + 1,) and items (nnz,) int.

        Repeated (user, item) pairs count once. ValueError for a regularization that is not
        positive or a max_items below 1.
        """
        if isinstance(regularization, bool) or not isinstance(regularization, numbers.Real) or not regularization > 0:
            raise ValueError(f"regularization must be a number > 0, got {regularization!r}")
        seen, pool, _ = rated_matrix(indptr, items, n_items, max_items)
        gram = torch.from_numpy((seen.T @ seen).toarray())
        gram.diagonal().add_(float(regularization))
        inverse = torch.cholesky_inverse(torch.linalg.cholesky(gram))
        weights = -inverse / inverse.diagonal()[None, :]
        weights.diagonal().zero_()
        return cls(pool, weights.numpy(), n_items)

    @classmethod
    def of_model(cls, model: Recommender) -> CoWatch | None:
        """The co-watch weights of the data `model` was trained on (its training CSR of seen items,
        kept in every artefact), built once per model and training and then cached; None for a
        model that carries no training interactions (e.g. built by hand rather than fitted)."""
        indptr, items = getattr(model, "_seen_indptr", None), getattr(model, "_seen_items", None)
        if indptr is None or items is None or len(items) == 0:
            return None
        return _CO_WATCH.get(
            model, lambda: cls.from_interactions(torch.as_tensor(indptr).numpy(), torch.as_tensor(items).numpy(), model.n_items)
        )

    def scores(self, rated: np.ndarray) -> np.ndarray:
        """Co-watch scores for profiles given as "has rated" masks.

        rated: (n_items,) or (n_profiles, n_items) bool (or 0/1) masks of the rated items.
        Returns float64 of the same shape: score_j = sum over rated pool items i of B[i, j];
        0 for items outside the pool and for empty profiles.
        """
        rated = np.asarray(rated)
        if rated.shape[-1] != self.n_items:
            raise ValueError(f"rated must have {self.n_items} columns (one per item), got shape {rated.shape}")
        if rated.ndim == 1:  # one profile: a sum of a few rows
            positions = self.position[np.flatnonzero(rated)]
            out = np.zeros(self.n_items, dtype=np.float64)
            out[self.pool] = self.weights[positions[positions >= 0]].sum(axis=0, dtype=np.float64)
            return out
        rows = np.atleast_2d(rated)[:, self.pool].astype(np.float32)
        out = np.zeros((rows.shape[0], self.n_items), dtype=np.float64)
        out[:, self.pool] = rows @ self.weights
        return out.reshape(rated.shape)


_CO_WATCH: PerModelCache[CoWatch] = PerModelCache()


def co_watch_scores(model: Recommender, ratings: Mapping[int, float] | Collection[int]) -> np.ndarray:
    """`CoWatch.of_model(model)` scores (n_items,) float64 of the profile's rated items (the
    keys of `ratings`); all zeros when the model carries no training interactions."""
    co_watch = CoWatch.of_model(model)
    if co_watch is None:
        return np.zeros(model.n_items, dtype=np.float64)
    mask = np.zeros(model.n_items, dtype=bool)
    mask[np.fromiter((int(item) for item in ratings), dtype=np.int64)] = True
    return co_watch.scores(mask)


def seen_scores(model: Recommender, ratings: Mapping[int, float] | Collection[int], not_seen: Collection[int] = ()) -> np.ndarray:
    """The seen term of the ranking: (n_items,) float64, the log chance that the person has seen
    each movie given the movies they rated (the keys of `ratings`) and the ones they have not
    seen (`Questioner.seen_log_probability` of `Questioner.of_model(model)`: a skipped movie's
    own answer is left out of its estimate). All zeros when the model carries no training
    interactions. ValueError for an item index outside the catalogue."""
    questioner = Questioner.of_model(model)
    if questioner is None:
        return np.zeros(model.n_items, dtype=np.float64)
    return questioner.seen_log_probability([int(item) for item in ratings], [int(item) for item in not_seen])


def ranking_values(
    scores: np.ndarray,
    popularity: np.ndarray,
    keep: np.ndarray,
    novelty: float = 0.0,
    *,
    co_watch: np.ndarray | None = None,
    co_watch_weight: float = 0.0,
    seen: np.ndarray | None = None,
    seen_weight: float = 0.0,
) -> np.ndarray:
    """What `recommend_profile` sorts by, for one profile or many at once: float64, -inf where not kept.

    scores: (n_items,) or (n_profiles, n_items) model scores; popularity: (n_items,) ratings per
    item (catalogue `popularity`); keep: bool, broadcastable to `scores`, True for the
    candidates; co_watch: `CoWatch` scores shaped like `scores` (None: no co-watch term); seen:
    `seen_scores` shaped like `scores` (None: no seen term). For each row,

        value_i = z(score_i) + co_watch_weight * z(co_watch_i) + seen_weight * z(seen_i)
                  + novelty * z(log popularity rank_i)

    over that row's candidates, z the standardisation over the candidates (zero when they are
    all equal, e.g. the co-watch scores of an empty profile) and rank 1 the most-rated item
    (ties share their average rank). Positive novelty pushes well-known items down; negative
    novelty pulls them up, i.e. weighs in how likely a person is to have seen or to watch the
    movie.
    """
    scores = np.asarray(scores, dtype=np.float64)
    keep = np.broadcast_to(np.asarray(keep, dtype=bool), scores.shape) & np.isfinite(scores)
    rows = np.atleast_2d(scores)
    mask = np.atleast_2d(keep)
    values = _masked_standardise(rows, mask)
    if co_watch is not None and co_watch_weight != 0.0:
        co_watch = np.asarray(co_watch, dtype=np.float64)
        if co_watch.shape != scores.shape:
            raise ValueError(f"co_watch must have the shape of scores {scores.shape}, got {co_watch.shape}")
        values = values + float(co_watch_weight) * _masked_standardise(np.atleast_2d(co_watch), mask)
    if seen is not None and seen_weight != 0.0:
        seen = np.asarray(seen, dtype=np.float64)
        if seen.shape != scores.shape:
            raise ValueError(f"seen must have the shape of scores {scores.shape}, got {seen.shape}")
        values = values + float(seen_weight) * _masked_standardise(np.atleast_2d(seen), mask)
    if novelty != 0.0:
        log_rank = np.log(_popularity_rank(np.asarray(popularity)))
        values = values + float(novelty) * _masked_standardise(np.broadcast_to(log_rank, rows.shape), mask)
    values = np.where(mask, values, -np.inf)
    return values.reshape(scores.shape)


def _masked_standardise(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Row-wise (values - mean) / std over the masked entries (n, m) float64; rows whose
    masked entries are all equal (or absent) give zeros. Unmasked entries are meaningless."""
    count = np.maximum(mask.sum(axis=1, keepdims=True), 1)
    safe = np.where(mask, values, 0.0)
    mean = safe.sum(axis=1, keepdims=True) / count
    centred = np.where(mask, values - mean, 0.0)
    spread = np.sqrt((centred**2).sum(axis=1, keepdims=True) / count)
    return np.divide(centred, spread, out=np.zeros_like(centred), where=spread > 0)


def _popularity_rank(popularity: np.ndarray) -> np.ndarray:
    """Rank of each item by popularity, 1 = most rated; ties share their average rank (float64)."""
    return pd.Series(popularity).rank(method="average", ascending=False).to_numpy(dtype=np.float64)


def _scores(model: Recommender, ratings: Mapping[int, float]) -> np.ndarray:
    """Scores of every item for the profile (n_items,) float64 on the CPU."""
    scores = model.score_folded(model.fold_in(ratings))
    return torch.as_tensor(scores).detach().to("cpu", torch.float64).numpy()


def _mmr(relevance: np.ndarray, factors: np.ndarray, k: int, diversity: float) -> np.ndarray:
    """Maximal marginal relevance: positions of `k` rows, picked one by one to maximise
    `(1 - diversity) * relevance_i - diversity * max_{j picked} cos(f_i, f_j)`.

    relevance: (m,) in [0, 1], best first is not required; factors: (m, d). The first pick is
    always the most relevant row. Returns int64 positions in pick order.
    """
    norms = np.linalg.norm(factors, axis=1, keepdims=True)
    unit = factors / np.where(norms > 0, norms, 1.0)
    max_similarity = np.full(len(relevance), -np.inf)
    available = np.ones(len(relevance), dtype=bool)
    picked = np.empty(min(k, len(relevance)), dtype=np.int64)
    for step in range(len(picked)):
        redundancy = np.where(np.isfinite(max_similarity), max_similarity, 0.0)
        value = np.where(available, (1.0 - diversity) * relevance - diversity * redundancy, -np.inf)
        best = np.flatnonzero(value == value.max())
        chosen = int(best[np.argmax(relevance[best])])  # ties: the more relevant, then the earlier
        picked[step] = chosen
        available[chosen] = False
        max_similarity = np.maximum(max_similarity, unit @ unit[chosen])
    return picked


def _reasons_for(
    model: Recommender,
    catalogue: pd.DataFrame,
    ratings: dict[int, float],
    items: np.ndarray,
    full_scores: np.ndarray,
) -> tuple[list[list[Reason]], list[bool]]:
    """Reasons for each of `items` from `model.explain_many` (one call for all of them) when it
    gives them, else leave-one-out. Flagged exact only when the model's contributions are additive
    (`explain_is_additive`): those are rescaled to add up to the score change; a non-additive
    model's own per-rating effects are shown as they are."""
    titles = catalogue["display_title"].to_numpy()
    explained = model.explain_many(ratings, np.asarray(items, dtype=np.int64))
    if explained is None:
        explained = [None] * len(items)
    additive = bool(getattr(model, "explain_is_additive", True))
    contributions: list[list[tuple[int, float]]] = [[] for _ in items]
    given = [pairs is not None for pairs in explained]
    if any(given):
        positions = [p for p, has in enumerate(given) if has]
        pairs_given = [explained[p] for p in positions]
        if additive:
            baseline = _scores(model, {})[items[positions]]
            pairs_given = _in_score_units(pairs_given, full_scores[items[positions]] - baseline)
        for position, pairs in zip(positions, pairs_given):
            contributions[position] = sorted(pairs, key=lambda pair: (-pair[1], pair[0]))
    exact = [has and additive for has in given]
    if not all(given):
        rated = np.array(sorted(ratings), dtype=np.int64)
        positions = [p for p, has in enumerate(given) if not has]
        loo = _leave_one_out(model, ratings, rated, items[positions], full_scores)
        for column, position in enumerate(positions):
            pairs = [(int(j), float(c)) for j, c in zip(rated.tolist(), loo[:, column])]
            pairs.sort(key=lambda pair: (-pair[1], pair[0]))
            contributions[position] = pairs
    reasons = [[Reason(j, str(titles[j]), float(ratings[j]), c) for j, c in pairs] for pairs in contributions]
    return reasons, exact


def _in_score_units(explained: list[list[tuple[int, float]]], score_change: np.ndarray) -> list[list[tuple[int, float]]]:
    """Rescale `explain` contributions so each item's sum equals its score change (score with the
    ratings minus score with none).

    `explain` may attribute a pre-activation score (matrix factorisation with a sigmoid range
    attributes the logit), while the page shows predicted ratings. Multiplying every
    contribution of an item by the secant slope `score_change / sum(contributions)` keeps their
    signs and proportions and makes them add up exactly, in rating units, to how far the
    ratings moved the item's prediction. For a model without an output activation the slope is
    1 and nothing changes. When the contributions cancel (|sum| < 1e-3) the slope is not
    measurable from the two scores; the median slope of the other items is used (1.0 if none).
    """
    totals = np.array([sum(c for _, c in pairs) for pairs in explained], dtype=np.float64)
    measurable = np.abs(totals) >= 1e-3
    slopes = np.ones(len(explained))
    slopes[measurable] = score_change[measurable] / totals[measurable]
    if (~measurable).any():
        slopes[~measurable] = float(np.median(slopes[measurable])) if measurable.any() else 1.0
    return [[(int(j), float(c) * slope) for j, c in pairs] for pairs, slope in zip(explained, slopes)]


def _leave_one_out(
    model: Recommender, ratings: dict[int, float], rated: np.ndarray, items: np.ndarray, full_scores: np.ndarray
) -> np.ndarray:
    """contribution[j, i] = score(items[i] | ratings) - score(items[i] | ratings without rated[j]).

    One fold-in per rated item; the scored rows are stacked and differenced in one operation.
    Returns (len(rated), len(items)) float64.
    """
    without = np.stack([_scores(model, {j: r for j, r in ratings.items() if j != int(left_out)})[items] for left_out in rated])
    return full_scores[items][None, :] - without


def _recommendations(
    model: Recommender,
    catalogue: pd.DataFrame,
    ratings: dict[int, float],
    items: np.ndarray,
    scores: np.ndarray,
    explain: bool,
) -> list[Recommendation]:
    if explain and ratings and len(items):
        reasons, exact = _reasons_for(model, catalogue, ratings, items, scores)
    else:
        reasons, exact = [[] for _ in items], [False] * len(items)
    titles = catalogue["display_title"].to_numpy()
    years = catalogue["year"].to_numpy(dtype=object, na_value=None)
    genres = catalogue["genres"].to_numpy()
    low, high = model.rating_scale
    out = []
    for position, item in enumerate(items.tolist()):
        score = float(scores[item])
        out.append(
            Recommendation(
                item_idx=int(item),
                title=str(titles[item]),
                year=None if years[item] is None else int(years[item]),
                genres=tuple(genres[item]),
                score=score,
                predicted_rating=float(np.clip(score, low, high)) if model.explicit else None,
                reasons=reasons[position],
                exact_reasons=exact[position],
            )
        )
    return out


# --- the page entry points --------------------------------------------------------------------
def recommend_profile(
    model: Recommender,
    catalogue: pd.DataFrame,
    ratings: Mapping[int, float],
    k: int = 20,
    filters: RecommendationFilter = RecommendationFilter(),
    novelty: float | None = None,
    diversity: float = 0.0,
    explain: bool = True,
    co_watch: float | None = None,
    *,
    not_seen: Collection[int] = (),
    seen: float | None = None,
    hide_not_seen: bool = True,
) -> list[Recommendation]:
    """The top `k` items for a person described by `ratings` {item_idx: rating}, best first.

    Rated items and items outside `filters` are never recommended. Items are ranked by
    `ranking_values`: `z(score) + co_watch * z(co-watch score) + seen * z(seen score) + novelty *
    z(log popularity rank)`, z the standardisation over the candidates (see the module docstring).
    co_watch (0..4, None = `DEFAULT_CO_WATCH`) weighs what people who rated the same movies
        also rated (`CoWatch`, from the model's training data, so it works with every model
        family), i.e. how likely the person is to watch the movie, against the model's score,
        how much they would like it. 0 is the model alone; an empty profile has no co-watch
        signal. A model that carries no training interactions gets none either.
    not_seen: item indices the person passed over: said they have not seen, or left unrated
        when offered. They inform the seen score (`seen_scores`) and, with `hide_not_seen`
        (default), are never recommended (see the module docstring); with it off they stay
        candidates, ranked by the other answers.
    seen (0..4, None = `DEFAULT_SEEN`) weighs the log chance that the person has seen the movie
        given their ratings and `not_seen` (`seen_scores`; with neither, the share of people who
        saw it). 0 leaves it out; a model without training interactions gets none.
    novelty (-1..1, None = `DEFAULT_NOVELTY`) is a signed weight on popularity, rank 1 the
        most-rated item (catalogue `popularity`). Above 0 it pushes well-known movies down (at
        1 the model's score and obscurity weigh the same); below 0 it pulls them up, a prior on
        what people actually watch (see `DEFAULT_NOVELTY`).
    diversity (0..1) re-ranks the best `max(5k, 200)` candidates by maximal marginal relevance
        on the cosine of `model.item_factors()`: relevance (the novelty-adjusted score scaled
        to 0..1) weighted `1 - diversity` against the largest similarity to the items already
        chosen weighted `diversity`.
    explain: attach reasons (see the module docstring); off, `reasons` are empty.
    """
    _check_catalogue(model, catalogue)
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    novelty = DEFAULT_NOVELTY if novelty is None else _check_range("novelty", novelty, NOVELTY_RANGE)
    co_watch = DEFAULT_CO_WATCH if co_watch is None else _check_range("co_watch", co_watch, CO_WATCH_RANGE)
    seen = DEFAULT_SEEN if seen is None else _check_range("seen", seen, SEEN_RANGE)
    diversity = _check_range("diversity", diversity, (0.0, 1.0))
    if not isinstance(filters, RecommendationFilter):
        raise TypeError(f"filters must be a RecommendationFilter, got {type(filters).__name__}")
    clean = model._validate_new_ratings(ratings)
    passed = item_indices(not_seen, model.n_items, "not_seen")
    scores = _scores(model, clean)
    keep = filters.mask(catalogue) & np.isfinite(scores)
    keep[list(clean)] = False
    if hide_not_seen:
        keep[passed] = False
    candidates = np.flatnonzero(keep)
    if candidates.size == 0:
        return []
    watched = co_watch_scores(model, clean) if co_watch > 0 and clean else None
    likely = seen_scores(model, clean, passed) if seen > 0 else None
    ranking = ranking_values(
        scores, catalogue["popularity"].to_numpy(), keep, novelty,
        co_watch=watched, co_watch_weight=co_watch, seen=likely, seen_weight=seen,
    )
    ranking = ranking[candidates]
    # best first, ties to the lower item index (candidates are sorted ascending)
    order = np.argsort(-ranking, kind="stable")
    if diversity > 0:
        pool = order[: max(5 * int(k), MMR_POOL)]
        relevance = ranking[pool]
        spread = relevance.max() - relevance.min()
        relevance = (relevance - relevance.min()) / spread if spread > 0 else np.ones_like(relevance)
        factors = np.asarray(model.item_factors(), dtype=np.float64)[candidates[pool]]
        chosen = candidates[pool[_mmr(relevance, factors, int(k), diversity)]]
    else:
        chosen = candidates[order[: int(k)]]
    return _recommendations(model, catalogue, clean, chosen, scores, explain)


def popularity_ranking(train: Dataset, exclude: np.ndarray | list[int] = (), k: int | None = None) -> np.ndarray:
    """Item indices by number of ratings in `train`, most first (ties: lower index), without `exclude`."""
    popularity = train.item_popularity().astype(np.float64)
    popularity[np.asarray(list(exclude), dtype=np.int64)] = -np.inf
    order = np.argsort(-popularity, kind="stable")
    order = order[np.isfinite(popularity[order])]
    return order if k is None else order[: int(k)]


def _first_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def popularity_overlap(shown: Sequence[int], ratings: Mapping[int, float] | Collection[int], train: Dataset, k: int = 10) -> float:
    """Share (0..1) of a recommendation list's top k (`shown`: item indices, best first, as the
    page shows them) that is also in the popularity top-k of `train`, the rated items excluded.
    1.0 means the list only tells the person what everyone watches; 0.0 for an empty list."""
    mine = [int(item) for item in shown][: _first_k(k)]
    if not mine:
        return 0.0
    popular = popularity_ranking(train, exclude=[int(item) for item in ratings], k=int(k))
    return len(set(mine) & set(popular.tolist())) / len(mine)


def generic_overlap(shown: Sequence[int], anyone: Sequence[int], ratings: Mapping[int, float] | Collection[int], k: int = 10) -> float:
    """Share (0..1) of the list's top k (`shown`, best first) that is also in the top k of
    `anyone`, the list the same settings give someone with no ratings at all (the person's rated
    items dropped from it first): how much of the list is the generic default rather than the
    person's taste. The default need not be the most popular movies (matrix factorisation's is
    the highest learned biases), so this catches thin profiles `popularity_overlap` misses."""
    mine = [int(item) for item in shown][: _first_k(k)]
    if not mine:
        return 0.0
    rated = {int(item) for item in ratings}
    generic = [int(item) for item in anyone if int(item) not in rated][: int(k)]
    return len(set(mine) & set(generic)) / len(mine)


def profile_is_thin(
    shown: Sequence[int],
    anyone: Sequence[int],
    ratings: Mapping[int, float] | Collection[int],
    train: Dataset,
    k: int = 10,
    max_overlap: float = THIN_OVERLAP,
) -> bool:
    """True when the list `shown` cannot be personal yet: fewer than `GOOD_PROFILE_SIZE` ratings,
    or more than `max_overlap` of its top k is the popularity top k (`popularity_overlap`) or the
    list `anyone` gets with no ratings (`generic_overlap`). Both lists are item indices, best first."""
    if len(ratings) < GOOD_PROFILE_SIZE:
        return True
    return popularity_overlap(shown, ratings, train, k) > max_overlap or generic_overlap(shown, anyone, ratings, k) > max_overlap


def compare_models(
    model_a: Recommender,
    model_b: Recommender,
    catalogue: pd.DataFrame,
    ratings: Mapping[int, float],
    k: int = 10,
    *,
    filters: RecommendationFilter = RecommendationFilter(),
    explain: bool = True,
    not_seen: Collection[int] = (),
    hide_not_seen: bool = True,
) -> tuple[list[Recommendation], list[Recommendation], list[int], float]:
    """Both models' top-k for the same profile (`ratings`, `not_seen` and `hide_not_seen`, as
    `recommend_profile` takes them), side by side.

    Returns (list_a, list_b, overlap_items, jaccard): overlap_items are the item indices in
    both lists, in list_a's order; jaccard = |A & B| / |A | B| (0.0 when both are empty).
    """
    same = {"explain": explain, "not_seen": not_seen, "hide_not_seen": hide_not_seen}
    list_a = recommend_profile(model_a, catalogue, ratings, k, filters, **same)
    list_b = recommend_profile(model_b, catalogue, ratings, k, filters, **same)
    items_a = [rec.item_idx for rec in list_a]
    items_b = {rec.item_idx for rec in list_b}
    overlap = [item for item in items_a if item in items_b]
    union = len(set(items_a) | items_b)
    return list_a, list_b, overlap, (len(overlap) / union if union else 0.0)


def similar_to(
    model: Recommender,
    item_idx: int,
    k: int = 10,
    *,
    catalogue: pd.DataFrame | None = None,
    filters: RecommendationFilter | None = None,
) -> list[tuple[int, str, float]]:
    """The `k` items most similar to `item_idx` ("because you watched"): [(item_idx, title, score)].

    Similarity is `model.similar_items` (cosine of item factors unless the model says
    otherwise). Titles come from `catalogue` when given, else "Item <raw id>"; `filters`
    restricts the candidates.
    """
    model._check_fitted()
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if catalogue is not None:
        _check_catalogue(model, catalogue)
    if filters is None or filters.is_empty:
        items, scores = model.similar_items(int(item_idx), int(k))
    else:
        if catalogue is None:
            raise ValueError("filters need the catalogue: pass catalogue=dataset.catalogue")
        items, scores = model.similar_items(int(item_idx), model.n_items)
        keep = filters.mask(catalogue)[items]
        items, scores = items[keep][: int(k)], scores[keep][: int(k)]
    if catalogue is not None:
        titles = catalogue["display_title"].to_numpy()[items].tolist()
    else:
        titles = [f"Item {raw}" for raw in model.item_map.ids[items].tolist()]
    return [(int(i), str(t), float(s)) for i, t, s in zip(items.tolist(), titles, scores.tolist())]


# --- watch next: next-item models ---------------------------------------------------------------
#: How many of the latest ratings `watch_next` weighs as reasons (one re-scoring each).
WATCH_NEXT_RECENT = 10


def next_item_chances(model: Recommender, ratings: Mapping[int, float], exclude: np.ndarray | None = None) -> np.ndarray:
    """The model's chance of each item being the next one watched after `ratings` (oldest first).

    The softmax of the model's next-item scores (what next-item models are trained to predict with
    a full softmax cross-entropy) over every item but `exclude` (int64 item indices; the rated items
    by default): (n_items,) float64 summing to 1 over the items not excluded, 0.0 at excluded ones;
    all zeros when every item is excluded.
    """
    scores = _scores(model, ratings).copy()
    if exclude is None:
        exclude = np.fromiter((int(item) for item in ratings), dtype=np.int64, count=len(ratings))
    scores[np.asarray(exclude, dtype=np.int64)] = -np.inf
    finite = np.isfinite(scores)
    if not finite.any():
        return np.zeros_like(scores)
    weights = np.exp(scores - scores[finite].max(), where=finite, out=np.zeros_like(scores))
    return weights / weights.sum()


def watch_next(
    model: Recommender,
    catalogue: pd.DataFrame,
    ratings: Mapping[int, float],
    k: int = 10,
    filters: RecommendationFilter = RecommendationFilter(),
    recent: int = WATCH_NEXT_RECENT,
) -> list[Recommendation]:
    """The `k` movies a next-item model expects a person to watch next, most likely first.

    model: a next-item model (`model.sequential`). ratings: {item_idx: rating} whose insertion
        order is the order the movies were watched, oldest first (the model's `fold_in` reads the
        latest ones; ratings below its `min_rating` are not part of the history).
    Rated items and items outside `filters` are never listed. Each `Recommendation` has
        score: `next_item_chances`, the model's chance that this is the next movie among all the
            unrated ones (filters do not renormalise it), float in [0, 1];
        predicted_rating: None (next-item models predict what, not how much);
        reasons: one `Reason` for each of the `recent` latest rated movies, largest first: how much
            the chance falls when that movie is left out of the history,
            `chance(i | history) - chance(i | history without j)` (both over the same unrated
            items); `exact_reasons` is False (leave-one-out re-scoring, one fold-in per reason).
    Ties in the chance go to the lower item index. There is no popularity prior (`novelty`):
    the item biases of a next-item model already carry how often each movie is watched.
    """
    _check_catalogue(model, catalogue)
    if not getattr(model, "sequential", False):
        raise ValueError(
            f"watch_next needs a next-item model (sequential = True), got {model.name!r}; "
            "train a sequence model (seq-pooling, seq-lstm, seq-transformer) or use recommend_profile"
        )
    for name, value in (("k", k), ("recent", recent)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not isinstance(filters, RecommendationFilter):
        raise TypeError(f"filters must be a RecommendationFilter, got {type(filters).__name__}")
    clean = model._validate_new_ratings(ratings)  # keeps the insertion (viewing) order
    rated = np.fromiter(clean, dtype=np.int64, count=len(clean))
    chances = next_item_chances(model, clean, rated)
    keep = filters.mask(catalogue)
    keep[rated] = False
    candidates = np.flatnonzero(keep)
    chosen = candidates[np.argsort(-chances[candidates], kind="stable")[: int(k)]]
    out = _recommendations(model, catalogue, clean, chosen, chances, explain=False)
    latest = rated[::-1][: int(recent)]  # latest first
    if not len(out) or not len(latest):
        return out
    without = np.stack(
        [
            next_item_chances(model, {j: r for j, r in clean.items() if j != left_out}, rated)[chosen]
            for left_out in latest.tolist()
        ]
    )
    contributions = chances[chosen][None, :] - without  # (len(latest), len(chosen))
    titles = catalogue["display_title"].to_numpy()
    reasons_of = []
    for column in range(len(chosen)):
        order = np.argsort(-contributions[:, column], kind="stable")  # ties: the more recent first
        reasons_of.append(
            [
                Reason(int(latest[r]), str(titles[latest[r]]), clean[int(latest[r])], float(contributions[r, column]))
                for r in order
            ]
        )
    return [Recommendation(**{**vars(rec), "reasons": reasons}) for rec, reasons in zip(out, reasons_of, strict=True)]
