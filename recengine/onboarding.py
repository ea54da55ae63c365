"""Which movies to ask a newcomer about, and the small helpers of the onboarding page.

A brand-new user rates a handful of movies; the model folds those ratings in (`fold_in`)
and recommends without retraining. Which movies we ask about decides how much those few
answers tell us, so the order is chosen, not sampled:

1. **Known movies only.** A person can only rate what they have seen, so the candidates are
   the movies above a popularity floor (by default the ~400 most-rated ones in training).
2. **Informative movies first.** Among those, a greedy *expected-information* design on the
   model's item factors picks each next movie. With a linear fold-in (ridge regression of
   the ratings on the rated items' factors `v`), the posterior precision of the user's vector
   is `A = lam * I + sum(v v^T)` over rated items, and a new rating of item `i` shrinks the
   posterior volume by `log(1 + v_i^T A^-1 v_i)` (D-optimal design). The newcomer has seen
   item `i` with probability `p_i` (the share of training users who rated it), so the greedy
   step maximises `p_i * log(1 + v_i^T A^-1 v_i)` and then adds the *expected* precision
   `p_i * v_i v_i^T` to `A`. Popular movies come first, but a second movie that points in the
   same latent direction as one already asked about is worth little, so the list spreads over
   the latent space instead of asking about five near-identical blockbusters.

The greedy loop keeps `A^-1 v` for every candidate up to date with Sherman-Morrison rank-one
updates, so the whole order costs O(pool^2 * d) in numpy (about 0.1 s for 400 movies and 64
factors).

**Adaptive questions** (`next_questions`, what the page asks after the first batch). The fixed
order asks everyone the same movies, so a person who has not seen them skips a lot, and the
answers are mostly "saw the blockbuster". After each batch of `BATCH_SIZE`, `Questioner` works
out which movies *this* person has likely seen from their answers so far (rated = seen, skipped
or left unrated = not seen; a linear conditional expectation on the covariance of "has rated"
in the training data) and asks about the movies they are likely to have seen *and* that say
something: each candidate scores `log seen - lift * log prior + design * latent gain + reach *
log reach` (`QuestionConfig`). With `lift` near 1 the questions are the movies the person is far
more likely than people at large to have seen, which is what makes a random sample of someone's
own history so informative; the reach is how much the answer, "seen" or "not seen", would
settle about the person's other movies. The first batch is the fixed order's head.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Collection, Mapping

import numpy as np

from recengine.data.dataset import Dataset, rated_matrix
from recengine.caching import PerModelCache
from recengine.models.base import Recommender


__all__ = [
    "BATCH_SIZE",
    "DEFAULT_POOL_SIZE",
    "DEFAULT_QUESTIONS",
    "QuestionConfig",
    "Questioner",
    "GOOD_PROFILE_SIZE",
    "RATING_CHOICES",
    "item_indices",
    "next_batch",
    "next_questions",
    "onboarding_order",
    "popularity_floor",
    "progress_message",
    "validate_rating",
]

#: Number of ratings after which fold-in recommendations are usually good.
GOOD_PROFILE_SIZE = 10
#: How many of the most-rated movies the default popularity floor keeps (ties included).
DEFAULT_POOL_SIZE = 400
#: Half-star ratings a person can give on the onboarding page.
RATING_CHOICES: tuple[float, ...] = tuple(step / 2 for step in range(1, 11))
#: Weight of the prior in the design, in units of an average item's squared factor norm.
PRIOR_WEIGHT = 1.0
#: Movies the onboarding page shows at once; the adaptive questions are re-planned per batch
#: (the page and `benchmarks/onboarding.py` share this constant).
BATCH_SIZE = 6


# --- ratings ----------------------------------------------------------------------------------
def validate_rating(value: object) -> float:
    """`value` as a float when it is a half-star rating between 0.5 and 5.0, else ValueError.

    Accepts Python and numpy numbers (4, 3.5, np.float32(2.5)); rejects booleans, strings,
    None, NaN, infinities, values outside 0.5..5.0 and values that are not a multiple of 0.5.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"rating must be a number from {RATING_CHOICES[0]} to {RATING_CHOICES[-1]} in half stars, got {value!r}")
    rating = float(value)
    if not math.isfinite(rating):
        raise ValueError(f"rating must be a finite number, got {value!r}")
    if not RATING_CHOICES[0] <= rating <= RATING_CHOICES[-1]:
        raise ValueError(f"rating must be between {RATING_CHOICES[0]} and {RATING_CHOICES[-1]}, got {value!r}")
    if rating * 2 != round(rating * 2):
        raise ValueError(f"rating must be a whole or half star (one of {RATING_CHOICES}), got {value!r}")
    return rating


def progress_message(n_rated: int) -> str:
    """A one-line progress note for the onboarding page, e.g. "7 rated; recommendations get good around 10"."""
    if isinstance(n_rated, bool) or not isinstance(n_rated, numbers.Integral) or n_rated < 0:
        raise ValueError(f"n_rated must be a non-negative integer, got {n_rated!r}")
    n_rated = int(n_rated)
    if n_rated >= GOOD_PROFILE_SIZE:
        return f"{n_rated} rated; enough for good recommendations, and every extra rating still sharpens them"
    return f"{n_rated} rated; recommendations get good around {GOOD_PROFILE_SIZE}"


# --- which movies to ask about ----------------------------------------------------------------
def popularity_floor(popularity: np.ndarray, pool_size: int = DEFAULT_POOL_SIZE) -> int:
    """The rating count of the `pool_size`-th most-rated item (at least 1): the default floor.

    Every item with at least that many ratings is a candidate, so ties at the boundary are all
    kept and the pool can be slightly larger than `pool_size`.
    """
    if pool_size < 1:
        raise ValueError(f"pool_size must be at least 1, got {pool_size}")
    counts = np.sort(np.asarray(popularity, dtype=np.int64))[::-1]
    if counts.size == 0:
        return 1
    return max(1, int(counts[min(pool_size, counts.size) - 1]))


def onboarding_order(
    model: Recommender,
    train: Dataset,
    *,
    min_popularity: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Item indices to ask a newcomer about, most useful first: int64 array (n_pool,).

    Candidates are the items rated at least `min_popularity` times in `train` (default:
    `popularity_floor(train popularity)`, i.e. the ~400 most-rated); they are ordered by the
    greedy popularity-weighted D-optimal design described in the module docstring, using
    `model.item_factors()` (n_items, d). Every candidate appears exactly once. The result is
    deterministic; `seed` only decides between candidates of exactly equal value.
    """
    model._check_fitted()
    factors = np.asarray(model.item_factors(), dtype=np.float64)
    if factors.ndim != 2 or factors.shape[0] != train.n_items:
        raise ValueError(
            f"model item factors have shape {factors.shape} but train has {train.n_items} items; "
            "pass the training data the model was fitted on"
        )
    popularity = train.item_popularity()
    if min_popularity is None:
        floor = popularity_floor(popularity)
    else:
        if isinstance(min_popularity, bool) or not isinstance(min_popularity, numbers.Integral) or min_popularity < 1:
            raise ValueError(f"min_popularity must be a positive integer (ratings in train), got {min_popularity!r}")
        floor = int(min_popularity)
    pool = np.flatnonzero(popularity >= floor)
    if pool.size == 0:
        raise ValueError(
            f"no item has at least {floor} ratings in {train!r} (most-rated has {int(popularity.max(initial=0))}); "
            "lower min_popularity"
        )
    # Tie-breaking order: a seeded permutation, so equal candidates are never picked by index bias.
    pool = pool[np.random.default_rng(seed).permutation(pool.size)]
    n_raters = max(1, int(np.count_nonzero(np.bincount(train.users, minlength=train.n_users))))
    seen_probability = np.minimum(popularity[pool] / n_raters, 1.0)
    return pool[_greedy_design(factors[pool], seen_probability)].astype(np.int64)


def _greedy_design(vectors: np.ndarray, weights: np.ndarray, prior_weight: float = PRIOR_WEIGHT) -> np.ndarray:
    """Order of the rows of `vectors` (n, d) by greedy weighted D-optimal design.

    Step t picks `argmax_i weights_i * log(1 + v_i^T A^-1 v_i)` among the rows not yet picked
    and adds `weights_i * v_i v_i^T` to A, starting from `A = lam * I` with
    `lam = prior_weight * mean(|v|^2)` (scale-free). `W = V A^-1` is kept current by
    Sherman-Morrison, so each step is O(n d). Returns a permutation of range(n) (int64);
    ties go to the lower row.
    """
    n = vectors.shape[0]
    scale = float(np.mean(np.einsum("ij,ij->i", vectors, vectors)))
    lam = prior_weight * scale if scale > 0 else 1.0
    inverse_products = vectors / lam  # W = V A^-1 with A = lam I
    quadratic = np.einsum("ij,ij->i", inverse_products, vectors)  # v_i^T A^-1 v_i
    available = np.ones(n, dtype=bool)
    order = np.empty(n, dtype=np.int64)
    for step in range(n):
        gain = np.where(available, weights * np.log1p(np.maximum(quadratic, 0.0)), -np.inf)
        chosen = int(np.argmax(gain))
        order[step] = chosen
        available[chosen] = False
        # A <- A + w v v^T  =>  A^-1 <- A^-1 - w (A^-1 v)(A^-1 v)^T / (1 + w v^T A^-1 v)
        w = float(weights[chosen])
        if w <= 0.0:
            continue
        direction = inverse_products[chosen].copy()  # A^-1 v_chosen
        denominator = 1.0 + w * quadratic[chosen]
        overlap = vectors @ direction  # v_i^T A^-1 v_chosen for every i
        inverse_products -= (w / denominator) * np.outer(overlap, direction)
        quadratic -= (w / denominator) * overlap**2
    return order


def next_batch(order: np.ndarray | list[int], answered: Collection[int], skipped: Collection[int], size: int = 6) -> list[int]:
    """The next `size` items of `order` the person has neither rated nor skipped (fewer at the end)."""
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    done = {int(item) for item in answered} | {int(item) for item in skipped}
    batch: list[int] = []
    for item in np.asarray(order, dtype=np.int64).tolist():
        if item not in done:
            batch.append(item)
            if len(batch) == size:
                break
    return batch


# --- adaptive questions -----------------------------------------------------------------------
@dataclass(frozen=True)
class QuestionConfig:
    """How `next_questions` ranks the movies it may ask about next.

    Candidate j (rated at least `min_popularity` times in training, not yet asked) scores

        log seen_j - lift * log prior_j + design * log(1 + v_j^T A^-1 v_j) + reach * log reach_j

    where seen_j is `Questioner.seen_probability` (the chance this person has seen j, given
    their answers so far, the answers' evidence scaled by `evidence`), prior_j the share of
    training users who rated j, the third term the latent-information gain of the fixed order
    (`A = lam * I + sum of v v^T` over the rated movies and the ones already picked for the batch,
    each weighted by its seen_j; left out when the questioner has no item factors), and reach_j
    how much j's answer would tell about the person's other movies (`_Reach`, relative to the
    candidates' mean; the movies already picked for the batch count as answered). The defaults
    were chosen on validation users; see `benchmarks/onboarding.py` for the figures.
    """

    lift: float = 0.75
    """0 asks what the person has most likely seen; 1 asks what they are far more likely to have
    seen than people at large (less-known movies that say more about them). At least 0."""
    design: float = 4.0
    """Weight of the latent-information gain (spread over the model's item factors). At least 0."""
    evidence: float = 1.0
    """Scale of the answers' evidence (the conditional term of `seen_probability`; 0: the prior alone). At least 0."""
    reach: float = 2.0
    """Weight of the answer's reach: the log of how much answering the movie would shrink the
    seen model's uncertainty about every other askable movie (`_Reach`), relative to the
    candidates' mean. A movie whose answer is still in doubt and that many others are watched
    with teaches the most. At least 0."""
    min_popularity: int = 20
    """Only movies rated at least this many times in training are asked about (the page's
    `DEFAULT_MIN_RATINGS`: predictions and co-watch are noisy below it)."""

    def __post_init__(self) -> None:
        for name in ("lift", "design", "evidence", "reach"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if isinstance(self.min_popularity, bool) or not isinstance(self.min_popularity, numbers.Integral) or self.min_popularity < 1:
            raise ValueError(f"min_popularity must be a positive integer (ratings in training), got {self.min_popularity!r}")


#: The adaptive questions' settings, chosen on validation users (`benchmarks/onboarding.py --tune-questions`).
DEFAULT_QUESTIONS = QuestionConfig()
#: Lowest seen probability used (its log must stay finite).
SEEN_FLOOR = 1e-3
#: The seen model covers this many of the most-rated items (the rest keep their prior).
SEEN_MAX_ITEMS = 2000
#: Ridge of the seen model's conditioning when it picks questions, in units of the pool's mean
#: variance: sharp, so that one answer already moves the next batch.
RIDGE = 0.1
#: Ridge of the seen model when it ranks recommendations (`Questioner.seen_log_probability`), in
#: the same units: smoother, as the estimate then orders every movie, not just the next six
#: asked. Chosen with `recengine.recommend.DEFAULT_SEEN` on validation users (see there).
RANKING_RIDGE = 3.0


class Questioner:
    """Which movies a newcomer has likely seen, given their answers, and what to ask them next.

    Built from who rated what in the training data: x_u (pool,) is user u's "has rated" vector
    over the `max_items` most-rated items (the pool), `prior` p its mean over the training users
    (n_items,) float64, and C (pool, pool) float32 its covariance. The answers so far observe x
    on the answered movies o (1 for a rated one, 0 for a skipped one), and the chance of having
    seen every other movie is the linear (Gaussian) conditional expectation

        seen = p + evidence * C[:, o] (C[o, o] + ridge I)^-1 (x_o - p_o)

    clipped to [SEEN_FLOOR, 1], with `ridge = RIDGE * mean variance over the pool`. With no
    answers this is the prior; rating a movie raises the movies usually seen with it, skipping
    one lowers them (and raises the movies its watchers tend not to see). Unlike the co-watch
    regression (`CoWatch`, which explains each movie by *every* other one), this conditions on
    the few movies actually answered, so one answer already moves the estimate. Items outside
    the pool keep their prior. Optionally the model's item factors (n_items, d) for the design term.
    """

    def __init__(self, pool: np.ndarray, covariance: np.ndarray, prior: np.ndarray, counts: np.ndarray, factors: np.ndarray | None = None) -> None:
        """pool: (p,) int64 items; covariance: (p, p); prior, counts: (n_items,) share and number of training users who rated each item."""
        self.pool = np.asarray(pool, dtype=np.int64)
        self.covariance = np.asarray(covariance, dtype=np.float32)
        self.prior = np.asarray(prior, dtype=np.float64)
        self.counts = np.asarray(counts, dtype=np.int64)
        self.n_items = len(self.prior)
        if self.covariance.shape != (len(self.pool), len(self.pool)) or self.counts.shape != self.prior.shape:
            raise ValueError(
                f"covariance must be (pool, pool) = {(len(self.pool),) * 2} and counts like prior {self.prior.shape}; "
                f"got {self.covariance.shape} and {self.counts.shape}"
            )
        self.position = np.full(self.n_items, -1, dtype=np.int64)
        self.position[self.pool] = np.arange(len(self.pool))
        variance = np.diagonal(self.covariance)
        #: The unit of the ridge (RIDGE, RANKING_RIDGE): the pool's mean variance (1 when there is none).
        self.variance = float(variance.mean()) if len(variance) and variance.mean() > 0 else 1.0
        self.factors = None if factors is None else np.asarray(factors, dtype=np.float64)
        if self.factors is not None and (self.factors.ndim != 2 or self.factors.shape[0] != self.n_items):
            raise ValueError(f"factors must be (n_items={self.n_items}, d), got shape {self.factors.shape}")

    def __repr__(self) -> str:
        return f"<Questioner over {len(self.pool)} of {self.n_items} items>"

    @classmethod
    def from_interactions(
        cls, indptr: np.ndarray, items: np.ndarray, n_items: int, factors: np.ndarray | None = None, max_items: int = SEEN_MAX_ITEMS
    ) -> Questioner:
        """Fit from a users x items CSR pattern: indptr (n_users + 1,) and items (nnz,) int;
        repeated (user, item) pairs count once, users without any item do not count."""
        seen, pool, counts = rated_matrix(indptr, items, n_items, max_items)
        n_users = max(1, int(np.count_nonzero(np.diff(np.asarray(indptr)))))
        prior = np.minimum(counts / n_users, 1.0)
        covariance = (seen.T @ seen).toarray() / n_users - np.outer(prior[pool], prior[pool])
        return cls(pool, covariance, prior, counts, factors)

    @classmethod
    def of_model(cls, model: Recommender) -> Questioner | None:
        """The questioner of the data `model` was trained on (its training CSR of seen items, kept
        in every artefact) with the model's item factors, built once per model and training and
        then cached beside it (never in it); None for a model that carries no training interactions."""
        indptr, items = getattr(model, "_seen_indptr", None), getattr(model, "_seen_items", None)
        if indptr is None or items is None or len(items) == 0:
            return None
        return _QUESTIONERS.get(model, lambda: cls._of_trained(model, indptr, items))

    @classmethod
    def _of_trained(cls, model: Recommender, indptr: object, items: object) -> Questioner:
        try:
            factors = np.asarray(model.item_factors(), dtype=np.float64)
        except NotImplementedError:
            factors = None
        if factors is not None and (factors.ndim != 2 or factors.shape[0] != model.n_items):
            factors = None  # no per-item vectors to spread over: the design term is left out
        return cls.from_interactions(np.asarray(indptr), np.asarray(items), model.n_items, factors)

    def seen_probability(
        self, rated: Collection[int], skipped: Collection[int], evidence: float = 1.0, ridge: float = RIDGE
    ) -> np.ndarray:
        """Chance that the person has seen each item given their answers: (n_items,) float64 in
        [SEEN_FLOOR, 1] (see the class docstring; `ridge` in units of the pool's mean variance);
        rated items get 1, skipped ones SEEN_FLOOR."""
        rated_items = item_indices(rated, self.n_items, "rated")
        skipped_items = item_indices(skipped, self.n_items, "skipped")
        seen, _ = self._condition(rated_items, skipped_items, evidence, ridge)
        seen = np.clip(seen, SEEN_FLOOR, 1.0)
        seen[skipped_items] = SEEN_FLOOR
        seen[rated_items] = 1.0
        return seen

    def seen_log_probability(self, rated: Collection[int], skipped: Collection[int], ridge: float = RANKING_RIDGE) -> np.ndarray:
        """log `seen_probability` for ranking recommendations: (n_items,) float64 in [log SEEN_FLOOR, 0].

        One difference: a skipped movie's own answer is left out of its estimate, which comes
        from the other answers alone (leave-one-out). The answer still lowers the movies usually
        watched with it; a skipped movie outside the pool keeps its prior. Whether skipped movies
        are recommended at all is `recengine.recommend.recommend_profile`'s `hide_not_seen`: when
        a person asks to see them, each is ranked by what the rest of their answers say, not
        buried by its own. Rated movies get 0 (they are never recommended).
        """
        rated_items = item_indices(rated, self.n_items, "rated")
        skipped_items = np.setdiff1d(item_indices(skipped, self.n_items, "skipped"), rated_items)
        seen, left_out = self._condition(rated_items, skipped_items, 1.0, ridge)
        seen[skipped_items] = self.prior[skipped_items]
        seen[left_out[0]] = left_out[1]
        seen = np.log(np.clip(seen, SEEN_FLOOR, 1.0))
        seen[rated_items] = 0.0
        return seen

    def _condition(
        self, rated_items: np.ndarray, skipped_items: np.ndarray, evidence: float, ridge: float
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """(seen, (answered, left_out)): the unclipped conditional expectation (n_items,) float64 of
        the class docstring, and for each answered movie inside the pool its expectation from the
        *other* answers alone. With K the ridged block of the answered movies and w = K^-1 (x - p),
        that is p_j + evidence * (x_j - p_j - w_j / (K^-1)_jj), the closed-form leave-one-out of
        Gaussian conditioning (Rasmussen & Williams 2006, eq. 5.12): no refit per answer."""
        seen = self.prior.copy()
        answered = np.concatenate([rated_items, skipped_items])
        observed = np.concatenate([np.ones(len(rated_items)), np.zeros(len(skipped_items))])
        inside = self.position[answered] >= 0
        if not evidence or not inside.any():
            return seen, (answered[inside], self.prior[answered[inside]])
        answered, observed = answered[inside], observed[inside]
        columns = self.position[answered]
        block = self.covariance[np.ix_(columns, columns)].astype(np.float64) + float(ridge) * self.variance * np.eye(len(columns))
        inverse = np.linalg.inv(block)
        residual = observed - self.prior[answered]
        weights = inverse @ residual
        seen[self.pool] += float(evidence) * (self.covariance[:, columns].astype(np.float64) @ weights)
        left_out = self.prior[answered] + float(evidence) * (residual - weights / np.diagonal(inverse))
        return seen, (answered, left_out)

    def next_questions(
        self,
        rated: Collection[int],
        skipped: Collection[int],
        n: int = BATCH_SIZE,
        exclude: Collection[int] = (),
        config: QuestionConfig = DEFAULT_QUESTIONS,
    ) -> np.ndarray:
        """The `n` movies to ask about next, best first: int64 (<= n,), never a rated, skipped or
        excluded one (fewer when the candidates run out). Deterministic; ties go to the lower index."""
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        rated_items = item_indices(rated, self.n_items, "rated")
        skipped_items = item_indices(skipped, self.n_items, "skipped")
        candidates = self.counts >= config.min_popularity
        candidates[rated_items] = False
        candidates[skipped_items] = False
        candidates[item_indices(exclude, self.n_items, "exclude")] = False
        pool = np.flatnonzero(candidates)
        if pool.size == 0:
            return np.zeros(0, dtype=np.int64)
        seen = self.seen_probability(rated_items, skipped_items, config.evidence)[pool]
        value = np.log(seen) - config.lift * np.log(np.maximum(self.prior[pool], SEEN_FLOOR))
        design = config.design > 0 and self.factors is not None
        if not design and config.reach == 0:
            return pool[np.argsort(-value, kind="stable")[: int(n)]].astype(np.int64)
        if design:
            vectors = self.factors[pool]
            known = self.factors[rated_items]
            askable = self.factors[self.counts >= config.min_popularity]
            scale = float(np.mean(np.einsum("ij,ij->i", askable, askable)))
            precision = (PRIOR_WEIGHT * scale if scale > 0 else 1.0) * np.eye(vectors.shape[1]) + known.T @ known
        reach = _Reach(self, np.concatenate([rated_items, skipped_items]), pool) if config.reach else None
        available = np.ones(pool.size, dtype=bool)
        chosen: list[int] = []
        for _ in range(min(int(n), pool.size)):
            total = value.copy()
            if design:
                total += config.design * np.log1p(np.maximum(np.einsum("ij,ij->i", vectors @ np.linalg.inv(precision), vectors), 0.0))
            if reach is not None:
                total += config.reach * reach.log_gain()
            best = int(np.argmax(np.where(available, total, -np.inf)))
            chosen.append(best)
            available[best] = False
            if design:
                precision += seen[best] * np.outer(vectors[best], vectors[best])
            if reach is not None:
                reach.answer(best)
        return pool[chosen].astype(np.int64)


class _Reach:
    """How much answering each candidate would tell about the person's other movies: the seen
    model's posterior covariance of "has seen" over the candidates inside its pool, given the
    answers so far, S = C_cc - C_co (C_oo + ridge I)^-1 C_oc, and for candidate j the total
    posterior variance an answer would remove, sum_i S_ij^2 / (S_jj + ridge) (Gaussian
    conditioning, `RIDGE` as the answer's noise). Picking j for the batch conditions S on it,
    S <- S - s_j s_j^T / (S_jj + ridge), so a batch does not ask six movies that tell the same.

    S is formed once per batch (float32, one matrix product); each pick then costs one
    matrix-vector product: the column sums of squares and the diagonal are updated in place of
    S, which keeps its rank-one corrections as a list (`next_questions` takes 50-75 ms a batch on
    ml-latest-small's 1,300 askable movies, with 6 to 200 answers; 220-320 ms updating S itself).
    """

    def __init__(self, questioner: Questioner, answered: np.ndarray, candidates: np.ndarray) -> None:
        self.ridge = RIDGE * questioner.variance
        inside = questioner.position[candidates]
        self.column = np.full(len(candidates), -1, dtype=np.int64)  # candidate -> row of S (-1: outside the pool)
        self.column[inside >= 0] = np.arange(int((inside >= 0).sum()))
        rows = inside[inside >= 0]
        observed = questioner.position[answered]
        observed = observed[observed >= 0]
        covariance = questioner.covariance
        self.posterior = covariance[np.ix_(rows, rows)]  # float32, a copy
        if len(observed):
            block = covariance[np.ix_(observed, observed)].astype(np.float64) + self.ridge * np.eye(len(observed))
            cross = covariance[np.ix_(rows, observed)]
            self.posterior -= cross @ np.linalg.solve(block, cross.T.astype(np.float64)).astype(np.float32)
        self.squares = np.einsum("ij,ij->j", self.posterior, self.posterior, dtype=np.float64)
        self.diagonal = np.diagonal(self.posterior).astype(np.float64)
        self.corrections: list[tuple[np.ndarray, float]] = []  # S now = S - sum of u u^T / d

    def log_gain(self) -> np.ndarray:
        """log(variance removed / its mean over the candidates in the pool), (n_candidates,) float64;
        0 for candidates outside the pool (no covariance to judge them by)."""
        out = np.zeros(len(self.column))
        inside = self.column >= 0
        if not inside.any():
            return out
        removed = np.maximum(self.squares / (self.diagonal + self.ridge), 1e-12)[self.column[inside]]
        out[inside] = np.log(removed / removed.mean())
        return out

    def answer(self, candidate: int) -> None:
        """Condition S on candidate `candidate` (an index into the candidates) being answered."""
        j = self.column[candidate]
        if j < 0:
            return
        u = self.posterior[:, j].astype(np.float64)  # column j of the current S
        for previous, weight in self.corrections:
            u -= previous * (previous[j] / weight)
        d = u[j] + self.ridge
        product = (self.posterior @ u.astype(np.float32)).astype(np.float64)  # S u, then the corrections
        for previous, weight in self.corrections:
            product -= previous * (previous @ u / weight)
        self.squares += u**2 * (u @ u) / d**2 - 2.0 * product * u / d
        self.diagonal -= u**2 / d
        self.corrections.append((u, d))


_QUESTIONERS: PerModelCache[Questioner] = PerModelCache()


def item_indices(items: Collection[int], n_items: int, name: str) -> np.ndarray:
    """`items` as a sorted int64 array of distinct indices, ValueError naming `name` when one is
    outside 0..n_items-1."""
    array = np.unique(np.fromiter((int(item) for item in items), dtype=np.int64))
    if array.size and (array[0] < 0 or array[-1] >= n_items):
        raise ValueError(f"{name} must hold item indices in 0..{n_items - 1}, got {array[0] if array[0] < 0 else array[-1]}")
    return array


def next_questions(
    model: Recommender,
    ratings: Mapping[int, float] | Collection[int],
    skipped: Collection[int],
    n: int = BATCH_SIZE,
    exclude: Collection[int] = (),
    *,
    first: np.ndarray | list[int] | None = None,
    config: QuestionConfig = DEFAULT_QUESTIONS,
    questioner: Questioner | None = None,
) -> np.ndarray:
    """The onboarding page's next batch: int64 (<= n,) item indices, adapted to the answers so far.

    ratings: the person's {item: rating} (or just the rated items); skipped: the movies they
    said (or, by leaving them unrated, showed) they have not seen; exclude: anything else not
    to ask (e.g. the batch on screen). Before any answer, the batch is the next `n` movies of
    `first` (the fixed `onboarding_order`) when given; after that, `Questioner.next_questions`
    with `config`, from `questioner` or `Questioner.of_model(model)`. A model that carries no
    training interactions falls back to walking `first` (ValueError without one).
    """
    rated = {int(item) for item in ratings}
    skipped = {int(item) for item in skipped}
    excluded = {int(item) for item in exclude}
    if not rated and not skipped and first is not None:
        return np.asarray(next_batch(first, (), excluded, size=n), dtype=np.int64)
    questioner = questioner if questioner is not None else Questioner.of_model(model)
    if questioner is None:
        if first is None:
            raise ValueError(
                f"{model!r} carries no training interactions to adapt the questions to; pass first=onboarding_order(model, train)"
            )
        return np.asarray(next_batch(first, rated, skipped | excluded, size=n), dtype=np.int64)
    return questioner.next_questions(rated, skipped, n, excluded, config)
