"""Synthetic ratings with known structure, for tests and scale benchmarks.

`generate_synthetic` draws a MovieLens-like dataset of any size in a few vectorised passes:

* **Clusters (genres).** Every item belongs to one of ``min(18, max(1, n_items // 10))``
  clusters, named after the MovieLens genres (an item may carry a second genre in the
  catalogue). Every user has a preference distribution over clusters (a sparse Dirichlet draw
  mixed with a little of the uniform distribution), so what a user watched says something
  about what they will watch.
* **Popularity.** Item weights follow a power law, ``weight = 1 / rank ** popularity_exponent``
  over a random ranking of the items (``popularity_exponent=0`` is uniform). A user's items
  are drawn without replacement with probability proportional to
  ``preference[user, cluster(item)] * weight[item]``.
* **Activity.** The number of ratings per user is heavy-tailed (log-normal), at least
  ``min(5, n_interactions // n_users)`` and at most `n_items` per user, summing exactly to
  `n_interactions`. No (user, item) pair occurs twice.
* **Ratings.** Users and items have latent vectors of size `n_factors` built from the cluster
  centroids (a user's vector is their preference-weighted centroid plus noise, an item's is its
  cluster centroid plus noise), plus a user bias and an item bias (correlated with popularity).
  ``rating = centre + spread * (standardised(bias_u + bias_i + u.v) + noise * N(0, 1))``, rounded
  to half stars and clipped to `rating_scale`, where ``centre`` sits at 2/3 of the scale (the
  MovieLens mean of ~3.5 on 0.5..5) and ``spread`` is the scale's width / 4.5 (one star on
  0.5..5), so ratings have a standard deviation of about one star. A matrix factorisation
  model can therefore learn the ratings down to the noise.
* **Time.** Each user rates in a session that starts between 1996 and 2018, with strictly
  increasing timestamps (gaps of one second to a few hours). With ``sequential=False`` a user's
  items come in random order. With ``sequential=True`` a user walks the clusters in ring order
  (starting from a random cluster) and, inside a cluster, through its items in index order
  (the cluster's "series"), with a little jitter: after item i of a series the next item is most often a
  later item of the same series, and after the end of a cluster comes the next cluster. A
  next-item model can learn these transitions; popularity cannot.

Rows come sorted by user, then by time. Raw ids are ``index + 1`` for users and items (like
MovieLens, ids start at 1), and titles read "Synthetic Movie 17 (1994)" for item id 17. With
``titles="pseudo"`` they are varied made-up titles in the MovieLens form instead ("Midnight
Garden, The (1994)", "Silent River 2 (2003)", "Blue Heart: Last Summer (2011)"): words drawn with
a Zipf-like law from a fixed vocabulary (so common words hit thousands of titles, as "love" or
"night" do in a real catalogue) mixed with made-up names (a vocabulary of tens of thousands of
rare words, as a real catalogue's names and foreign words give), trailing articles, sequels,
subtitles and a few alternative titles in parentheses; repeats happen, as remakes do
(`pseudo_titles`). They come from their own generator, so the
ratings are the same whatever `titles` is. This is what a search benchmark over a large
catalogue needs (`benchmarks/catalogue.py`).

`checkerboard` is a tiny deterministic dataset for contract tests; its structure is documented
on the function.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recengine.data.dataset import Dataset, IdMap, make_catalogue

__all__ = ["GENRES", "TITLE_STYLES", "generate_synthetic", "checkerboard", "pseudo_titles"]

#: Genre names used for the synthetic clusters (the MovieLens genres, in their order).
GENRES = (
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)

#: Catalogue title styles of `generate_synthetic`: "Synthetic Movie <id> (<year>)" or made-up titles.
TITLE_STYLES = ("numbered", "pseudo")

# Vocabulary of the pseudo-titles, most frequent first (drawn with weight 1 / rank ** 0.9).
_TITLE_WORDS = tuple(
    """
    love night man day last dead life girl world time house city blue black dark star war story
    heart king death blood little big lost home red great new secret summer game dream river
    water fire moon sun king's road street angel devil ghost legend island mountain sea storm
    silent wild golden broken hidden final first second american french long short strange
    happy lonely crazy perfect deadly sweet bitter cold hot high low true false young old
    brother sister mother father daughter son family wedding party murder crime justice
    revenge escape return journey voyage hunt hunter killer doctor detective soldier captain
    queen prince princess lady lord boy woman men women children people friends lovers
    stranger strangers shadow shadows light mirror window door garden forest desert ocean
    valley bridge tower castle palace hotel train station airport harbour paris london tokyo
    rome berlin texas california chicago brooklyn manhattan vegas hollywood paradise heaven
    hell earth planet space galaxy empire kingdom republic nation revolution freedom glory
    honor promise memory memories letter letters song songs music dance dancer singer
    painter thief thieves spy spies agent agents witness jury trial prison cell
    winter spring autumn morning evening midnight tomorrow yesterday forever never always
    """.split()
)
_SEQUELS = (" 2", " 3", " II", " III", " Part 2", " Returns", " Reloaded")
# Syllables of made-up names ("Kavorin", "Delmaro"): a quarter of the words, a vocabulary of tens of
# thousands, like the names and foreign words of a real catalogue.
_SYLLABLES = tuple("ka vo rin del ma ro sa ti ne lu mi ber gan to zo ra fe li qua shen dor an el is or ul yen ha bri cas".split())
_NAME_SHARE = 0.25
_TRAILING = (", The", ", A", ", Les", ", La")

_FIRST_START = 820_454_400  # 1996-01-01 UTC
_LAST_START = 1_514_764_800  # 2018-01-01 UTC
_DENSE_ROWS_ELEMENTS = 1 << 22  # bound on (users x items) cells scored at once for heavy users
_CHUNK = 1 << 20  # interactions per chunk where a chunk needs (chunk, n_factors) temporaries


def generate_synthetic(
    n_users: int = 1000,
    n_items: int = 500,
    n_interactions: int = 50_000,
    *,
    n_factors: int = 8,
    popularity_exponent: float = 1.0,
    noise: float = 0.5,
    sequential: bool = False,
    rating_scale: tuple[float, float] = (0.5, 5.0),
    titles: str = "numbered",
    seed: int = 0,
) -> Dataset:
    """A random Dataset named "synthetic" with taste, popularity and (optionally) order structure.

    See the module docstring for the generative story. Deterministic for a given `seed`.

    Args:
        n_users, n_items: sizes of the id maps (every user has at least one rating).
        n_interactions: exact number of ratings; between `n_users` and `n_users * n_items`.
        n_factors: size of the latent user and item vectors behind the ratings.
        popularity_exponent: power-law exponent of item popularity (0 = uniform, at most 10).
        noise: standard deviation of the rating noise relative to the signal's (>= 0).
        sequential: order each user's items along cluster/series chains (see module docstring).
        rating_scale: (lowest, highest) rating; ratings are multiples of 0.5 from `lowest`.
        titles: one of `TITLE_STYLES`: "numbered" ("Synthetic Movie <id> (<year>)") or
            "pseudo" (varied made-up titles, see the module docstring).
        seed: seed of the local generator (`np.random.default_rng(seed)`).

    Returns:
        Dataset with users/items int32, ratings float32 (half stars), timestamps int64
        (strictly increasing per user), rows sorted by (user, timestamp), and a catalogue with
        titles (see `titles`), years and genres.
    """
    _validate(n_users, n_items, n_interactions, n_factors, popularity_exponent, noise, rating_scale)
    if titles not in TITLE_STYLES:
        raise ValueError(f"titles must be one of {TITLE_STYLES}, got {titles!r}")
    rng = np.random.default_rng(seed)
    n_clusters = int(min(len(GENRES), max(1, n_items // 10)))

    # Items: cluster, position in the cluster's series, popularity weight.
    cluster_of_item = np.empty(n_items, dtype=np.int64)
    cluster_of_item[rng.permutation(n_items)] = np.arange(n_items) % n_clusters  # no empty cluster
    popularity_rank = rng.permutation(n_items)  # 0 = most popular
    weight = 1.0 / (popularity_rank + 1.0) ** popularity_exponent
    by_cluster = np.argsort(cluster_of_item, kind="stable")  # items grouped by cluster, index order
    cluster_starts = np.searchsorted(cluster_of_item[by_cluster], np.arange(n_clusters + 1))
    series_position = np.empty(n_items, dtype=np.int64)  # rank of the item inside its cluster
    series_position[by_cluster] = np.arange(n_items) - cluster_starts[cluster_of_item[by_cluster]]

    # Users: preferences over clusters and number of ratings. P(cluster | user) is the
    # preference times the cluster's total popularity, so item popularity stays global.
    preference = 0.9 * rng.dirichlet(np.full(n_clusters, 0.3), size=n_users) + 0.1 / n_clusters
    cluster_probability = preference * np.bincount(cluster_of_item, weights=weight, minlength=n_clusters)
    cluster_probability /= cluster_probability.sum(axis=1, keepdims=True)
    counts = _user_counts(rng, n_users, n_items, n_interactions)

    item_bits = max(1, (n_items - 1).bit_length())
    keys = _sample_items(rng, counts, cluster_probability, cluster_of_item, by_cluster, cluster_starts, weight, item_bits)
    users = keys >> item_bits
    items = keys & ((1 << item_bits) - 1)
    del keys

    # Order inside each user: one sort of (user | order key | item) packed into int64.
    order_bits = 62 - item_bits - max(1, (n_users - 1).bit_length())
    if sequential:
        start_cluster = rng.integers(0, n_clusters, size=n_users)
        cluster_step = (cluster_of_item[items] - start_cluster[users]) % n_clusters
        size_of_cluster = np.diff(cluster_starts)[cluster_of_item[items]]
        walk = cluster_step + series_position[items] / size_of_cluster + rng.normal(0.0, 0.05, size=len(items))
        position = np.clip((walk + 0.5) / (n_clusters + 1.0), 0.0, 1.0 - 1e-9)
        order_key = (position * float(1 << order_bits)).astype(np.int64)
        del cluster_step, size_of_cluster, walk, position
    else:
        order_key = rng.integers(0, 1 << order_bits, size=len(items), dtype=np.int64)
    packed = (users << (order_bits + item_bits)) | (order_key << item_bits) | items
    del order_key
    packed.sort()
    users = (packed >> (order_bits + item_bits)).astype(np.int32)
    items = (packed & ((1 << item_bits) - 1)).astype(np.int32)
    del packed
    timestamps = _timestamps(rng, counts)

    ratings = _ratings(rng, users, items, preference, cluster_of_item, popularity_rank, n_factors, noise, rating_scale)
    title_rng = np.random.default_rng([seed, 1]) if titles == "pseudo" else None  # own stream: ratings unchanged
    catalogue = _catalogue(rng, n_items, cluster_of_item, n_clusters, items, ratings, title_rng)
    return Dataset.from_arrays(
        "synthetic",
        users,
        items,
        ratings,
        timestamps,
        user_map=IdMap(np.arange(1, n_users + 1, dtype=np.int64)),
        item_map=IdMap(np.arange(1, n_items + 1, dtype=np.int64)),
        catalogue=catalogue,
        rating_scale=(float(rating_scale[0]), float(rating_scale[1])),
    )


def checkerboard(n_users: int = 8, n_items: int = 8) -> Dataset:
    """A tiny deterministic two-group dataset for contract tests (name "checkerboard").

    Users ``0 .. n_users//2 - 1`` form group A, the rest group B; items ``0 .. n_items//2 - 1``
    are group-A items, the rest group-B items. A user at position ``j`` inside their group:

    * rates 5.0 every item of their own group except one, ``own[j % len(own)]``, which stays
      unrated (so with ``exclude_seen=True`` the best recommendation is that own-group item);
    * rates 1.0 two items of the other group, ``other[j % len(other)]`` and
      ``other[(j + 1) % len(other)]``, and leaves the other other-group items unrated.

    With the default 8 x 8: user 0 rates items 1, 2, 3 with 5.0 and items 4, 5 with 1.0; its
    unrated items are 0 (own group, the expected top recommendation), 6 and 7. Every own-group
    item is rated by all but one of its group's users, so item-item similarity is high inside a
    group. Timestamps increase by 60 s per row; rows are sorted by user, then own-group items
    first. Raw ids are ``index + 1``; rating scale (0.5, 5.0).
    """
    if n_users < 4 or n_items < 4:
        raise ValueError(f"checkerboard needs at least 4 users and 4 items (two per group), got {n_users} x {n_items}")
    half_users, half_items = n_users // 2, n_items // 2
    group_items = (np.arange(half_items), np.arange(half_items, n_items))
    users_out: list[np.ndarray] = []
    items_out: list[np.ndarray] = []
    ratings_out: list[np.ndarray] = []
    for user in range(n_users):
        group, j = (0, user) if user < half_users else (1, user - half_users)
        own, other = group_items[group], group_items[1 - group]
        liked = np.delete(own, j % len(own))
        disliked = other[[j % len(other), (j + 1) % len(other)]]
        chosen = np.concatenate([liked, disliked])
        users_out.append(np.full(len(chosen), user))
        items_out.append(chosen)
        ratings_out.append(np.concatenate([np.full(len(liked), 5.0), np.full(len(disliked), 1.0)]))
    users = np.concatenate(users_out)
    items = np.concatenate(items_out)
    ratings = np.concatenate(ratings_out)
    timestamps = 1_000_000_000 + 60 * np.arange(len(users), dtype=np.int64)
    item_ids = np.arange(1, n_items + 1, dtype=np.int64)
    genres = [("Comedy",) if i < half_items else ("Drama",) for i in range(n_items)]
    titles = [f"Checkerboard {'A' if i < half_items else 'B'}{i + 1} (2000)" for i in range(n_items)]
    catalogue = make_catalogue(item_ids, titles, genres, items, ratings)
    return Dataset.from_arrays(
        "checkerboard",
        users,
        items,
        ratings,
        timestamps,
        user_map=IdMap(np.arange(1, n_users + 1, dtype=np.int64)),
        item_map=IdMap(item_ids),
        catalogue=catalogue,
        rating_scale=(0.5, 5.0),
    )


# --- pieces of the generator ------------------------------------------------------------------
def _validate(
    n_users: int,
    n_items: int,
    n_interactions: int,
    n_factors: int,
    popularity_exponent: float,
    noise: float,
    rating_scale: tuple[float, float],
) -> None:
    if n_users < 1 or n_items < 1:
        raise ValueError(f"n_users and n_items must be >= 1, got n_users={n_users}, n_items={n_items}")
    if not n_users <= n_interactions <= n_users * n_items:
        raise ValueError(
            f"n_interactions must be between n_users ({n_users}, one rating each) and "
            f"n_users * n_items ({n_users * n_items}, every pair once), got {n_interactions}"
        )
    if max(1, (n_users - 1).bit_length()) + max(1, (n_items - 1).bit_length()) > 48:
        raise ValueError(f"n_users * n_items must stay below 2**48 (keys are packed in int64), got {n_users} x {n_items}")
    if n_factors < 1:
        raise ValueError(f"n_factors must be >= 1, got {n_factors}")
    if not 0 <= popularity_exponent <= 10:
        raise ValueError(f"popularity_exponent must be between 0 (uniform) and 10, got {popularity_exponent}")
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    low, high = rating_scale
    if not high - low >= 0.5:
        raise ValueError(f"rating_scale must be (lowest, highest) with highest >= lowest + 0.5, got {rating_scale}")


def _user_counts(rng: np.random.Generator, n_users: int, n_items: int, n_interactions: int) -> np.ndarray:
    """Heavy-tailed ratings per user: int64 (n_users,), each in [floor, n_items], summing exactly.

    Every user gets ``floor = min(5, n_interactions // n_users)``; the rest is shared in
    proportion to log-normal weights, water-filled under the cap of `n_items` per user, then
    rounded by largest remainder.
    """
    floor = min(5, n_interactions // n_users, n_items)
    cap = n_items - floor
    remaining = n_interactions - floor * n_users
    weights = rng.lognormal(0.0, 1.0, size=n_users)
    capped = np.zeros(n_users, dtype=bool)
    share = np.zeros(n_users)
    while remaining > 0:
        if capped.all():
            share = np.full(n_users, float(cap))
            break
        free_weight = weights[~capped].sum()
        scale = (remaining - cap * capped.sum()) / free_weight
        share = np.where(capped, cap, weights * scale)
        newly = (share > cap) & ~capped
        if not newly.any():
            break
        capped |= newly
    counts = np.floor(share).astype(np.int64)
    shortfall = remaining - int(counts.sum())
    if shortfall > 0:  # largest fractional parts get one more (they are below the cap)
        fraction = np.where(counts < cap, share - counts, -1.0)
        counts[np.argsort(-fraction, kind="stable")[:shortfall]] += 1
    return counts + floor


def _sample_items(
    rng: np.random.Generator,
    counts: np.ndarray,
    cluster_probability: np.ndarray,
    cluster_of_item: np.ndarray,
    by_cluster: np.ndarray,
    cluster_starts: np.ndarray,
    weight: np.ndarray,
    item_bits: int,
) -> np.ndarray:
    """counts[u] distinct items per user u, drawn without replacement from
    P(item | user) = cluster_probability[user, cluster(item)] * weight[item] / cluster weight.

    The items of a user are the first counts[u] distinct items of an endless stream of
    independent draws (successive sampling, the law of `rng.choice(replace=False, p=...)`).
    The stream is drawn in rounds: each user draws a few times their shortfall (more when
    their earlier draws were mostly repeats), the draws get random times, and the first new
    distinct items in time order fill the shortfall. Users asking for more than a fifth of
    the catalogue, and the few still short after 6 rounds, finish with the Gumbel top-k trick
    over the items they do not have yet (the same law). Everything is done with sorts of
    packed int64 keys, the fastest large-array operation numpy has.

    Returns distinct keys ``user << item_bits | item`` (int64), in no particular order.
    """
    n_users, n_clusters = cluster_probability.shape
    n_items = len(cluster_of_item)
    user_bits = max(1, (n_users - 1).bit_length())
    time_bits = 62 - user_bits - item_bits
    item_mask, time_mask = (1 << item_bits) - 1, (1 << time_bits) - 1
    sampler = _ItemSampler(cluster_of_item, by_cluster, cluster_starts, weight)
    heavy = counts > max(1, n_items // 5)
    need = np.where(heavy, 0, counts)
    factor = np.full(n_users, 1.3)  # draws asked per missing item
    have = np.zeros(n_users, dtype=np.int64)
    chosen: list[np.ndarray] = []  # distinct keys, disjoint across rounds
    for round_number in range(6):
        active = np.flatnonzero(need)
        if not len(active):
            break
        asked = np.ceil(need[active] * factor[active]).astype(np.int64) + 2
        per_cluster = rng.multinomial(asked, cluster_probability[active]).ravel()
        owners = np.repeat(active.astype(np.int64), asked)  # per_cluster is grouped by user
        items = sampler.draw(rng, np.repeat(np.tile(np.arange(n_clusters), len(active)), per_cluster))
        times = rng.integers(0, 1 << time_bits, size=len(owners), dtype=np.int64)
        # First draw of each (user, item): sort by (user, item, time), keep group heads.
        draws = (owners << (item_bits + time_bits)) | (items << time_bits) | times
        del owners, items, times
        draws.sort()
        pairs = draws >> time_bits
        head = np.concatenate(([True], pairs[1:] != pairs[:-1]))
        if round_number:  # drop items chosen in earlier rounds (only this round's users matter)
            is_active = np.zeros(n_users, dtype=bool)
            is_active[active] = True
            earlier = np.concatenate([keys[is_active[keys >> item_bits]] for keys in chosen])
            earlier.sort()
            head &= ~_sorted_contains(earlier, pairs)
        draws, pairs = draws[head], pairs[head]
        owners = pairs >> item_bits
        new_per_user = np.bincount(owners, minlength=n_users)
        # Keep each user's first `need` new items in time order: sort by (user, time, item).
        by_time = (owners << (time_bits + item_bits)) | ((draws & time_mask) << item_bits) | (pairs & item_mask)
        del draws, pairs, owners
        by_time.sort()
        owners = by_time >> (time_bits + item_bits)
        rank = np.arange(len(by_time)) - (np.cumsum(new_per_user) - new_per_user)[owners]
        keep = rank < need[owners]
        kept = (owners[keep] << item_bits) | (by_time[keep] & item_mask)
        chosen.append(kept)
        have += np.bincount(kept >> item_bits, minlength=n_users)
        # Users whose draws were mostly repeats ask for proportionally more next round.
        found = np.maximum(new_per_user[active], 1) / asked
        factor[active] = np.clip(1.3 / found, 1.3, 64.0)
        need = np.where(heavy, 0, counts - have)
    short = np.flatnonzero(need > 0)
    exact = np.flatnonzero((need > 0) | heavy)
    if len(exact):
        in_short = np.zeros(n_users, dtype=bool)
        in_short[short] = True
        already = np.sort(np.concatenate([keys[in_short[keys >> item_bits]] for keys in chosen] + [np.zeros(0, np.int64)]))
        log_probability = np.log(cluster_probability)
        log_within = np.log(weight / np.bincount(cluster_of_item, weights=weight)[cluster_of_item])
        missing = counts[exact] - have[exact]
        chosen.append(_gumbel_top_k(rng, exact, missing, already, log_probability, cluster_of_item, log_within, item_bits))
    return np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)


def _sorted_contains(haystack: np.ndarray, needles: np.ndarray) -> np.ndarray:
    """Boolean mask: which needles occur in the sorted array haystack."""
    if not len(haystack):
        return np.zeros(len(needles), dtype=bool)
    position = np.minimum(np.searchsorted(haystack, needles), len(haystack) - 1)
    return haystack[position] == needles


class _ItemSampler:
    """Inverse-CDF sampling of an item inside a given cluster, in O(1) expected time per draw.

    The cumulative weights of each cluster's items are laid end to end as one increasing
    array ``flat`` (cluster c spans (c, c + 1]); a draw for cluster c is the first item whose
    value exceeds ``c + uniform``. A guide table (8 buckets per item) gives each draw a start
    index at most a few steps before its answer, so no binary search over the catalogue is
    needed (random binary searches over a large array are slow).
    """

    def __init__(self, cluster_of_item: np.ndarray, by_cluster: np.ndarray, cluster_starts: np.ndarray, weight: np.ndarray):
        n_clusters = len(cluster_starts) - 1
        sorted_weight = weight[by_cluster]
        cluster_sorted = cluster_of_item[by_cluster]
        cluster_total = np.add.reduceat(sorted_weight, cluster_starts[:-1])
        before = np.concatenate(([0.0], np.cumsum(cluster_total)[:-1]))
        flat = cluster_sorted + (np.cumsum(sorted_weight) - before[cluster_sorted]) / cluster_total[cluster_sorted]
        flat[cluster_starts[1:] - 1] = np.arange(1, n_clusters + 1)  # exact cluster ends
        self.flat = flat
        self.by_cluster = by_cluster
        self.n_buckets = 8 * len(flat)
        self.bucket_width = n_clusters / self.n_buckets
        self.edges = np.arange(self.n_buckets) * self.bucket_width
        self.guide = np.searchsorted(flat, self.edges, side="right")

    def draw(self, rng: np.random.Generator, clusters: np.ndarray) -> np.ndarray:
        """One item index (int64) per entry of `clusters`."""
        x = clusters + rng.random(len(clusters)) * (1.0 - 1e-12)
        bucket = np.minimum((x / self.bucket_width).astype(np.int64), self.n_buckets - 1)
        bucket -= self.edges[bucket] > x  # guard against rounding at bucket edges
        index = self.guide[bucket]
        behind = np.flatnonzero(self.flat[index] <= x)
        while len(behind):
            index[behind] += 1
            behind = behind[self.flat[index[behind]] <= x[behind]]
        return self.by_cluster[index]


def _gumbel_top_k(
    rng: np.random.Generator,
    users: np.ndarray,
    counts: np.ndarray,
    already: np.ndarray,
    log_cluster_probability: np.ndarray,
    cluster_of_item: np.ndarray,
    log_within: np.ndarray,
    item_bits: int,
) -> np.ndarray:
    """Weighted sampling without replacement of counts[j] more items for users[j], skipping
    the sorted keys `already` (their items so far): keys ``user << item_bits | item`` (int64).

    Perturbing log-probabilities with Gumbel noise and keeping the largest k is exactly
    successive sampling without replacement. Users are scored in chunks of whole rows.
    """
    n_items = len(cluster_of_item)
    rows_per_chunk = max(1, _DENSE_ROWS_ELEMENTS // n_items)
    order = np.argsort(counts, kind="stable")  # similar counts share a chunk
    users, counts = users[order], counts[order]
    out: list[np.ndarray] = []
    for start in range(0, len(users), rows_per_chunk):
        chunk = users[start : start + rows_per_chunk].astype(np.int64)
        want = counts[start : start + rows_per_chunk]
        scores = log_cluster_probability[chunk][:, cluster_of_item] + log_within
        scores += rng.gumbel(size=scores.shape)
        lo, hi = np.searchsorted(already, [chunk[0] << item_bits, (chunk[-1] + 1) << item_bits])
        taken = already[lo:hi]
        scores[np.searchsorted(chunk, taken >> item_bits), taken & ((1 << item_bits) - 1)] = -np.inf
        top = int(want.max())
        if top < n_items:
            best = np.argpartition(scores, n_items - top, axis=1)[:, n_items - top :]
        else:
            best = np.broadcast_to(np.arange(n_items), scores.shape)
        ranked = np.take_along_axis(best, np.argsort(-np.take_along_axis(scores, best, axis=1), axis=1), axis=1)
        take = np.arange(ranked.shape[1])[None, :] < want[:, None]
        rows = np.broadcast_to(chunk[:, None], ranked.shape)
        out.append((rows[take] << item_bits) | ranked[take])
    return np.concatenate(out)


def _timestamps(rng: np.random.Generator, counts: np.ndarray) -> np.ndarray:
    """Strictly increasing int64 timestamps inside each user, for rows sorted by user."""
    n_rows = int(counts.sum())
    gaps = 1 + rng.exponential(3 * 3600.0, size=n_rows).astype(np.int64)
    running = np.cumsum(gaps)
    first = np.cumsum(counts) - counts
    before_user = np.where(first > 0, running[np.maximum(first - 1, 0)], 0)
    start = rng.integers(_FIRST_START, _LAST_START, size=len(counts))
    return running + np.repeat(start - before_user, counts)


def _ratings(
    rng: np.random.Generator,
    users: np.ndarray,
    items: np.ndarray,
    preference: np.ndarray,
    cluster_of_item: np.ndarray,
    popularity_rank: np.ndarray,
    n_factors: int,
    noise: float,
    rating_scale: tuple[float, float],
) -> np.ndarray:
    """Half-star ratings from biases + latent dot product + noise (float32, len(users))."""
    n_users, n_clusters = preference.shape
    n_items = len(cluster_of_item)
    centroids = rng.normal(size=(n_clusters, n_factors))
    centred = preference - preference.mean(axis=1, keepdims=True)
    user_vectors = (centred / np.linalg.norm(centred, axis=1, keepdims=True).clip(1e-12)) @ centroids
    user_vectors += 0.5 * rng.normal(size=(n_users, n_factors))
    item_vectors = centroids[cluster_of_item] + 0.5 * rng.normal(size=(n_items, n_factors))
    user_bias = rng.normal(size=n_users)
    log_popularity = -np.log1p(popularity_rank)
    popularity_z = (log_popularity - log_popularity.mean()) / max(log_popularity.std(), 1e-12)
    item_bias = 0.7 * rng.normal(size=n_items) + 0.3 * popularity_z  # popular items rate a little higher

    user_vectors = user_vectors.astype(np.float32)
    item_vectors = item_vectors.astype(np.float32)
    signal = np.empty(len(users), dtype=np.float32)
    for start in range(0, len(users), _CHUNK):  # row gathers in chunks bound the memory
        chunk = slice(start, start + _CHUNK)
        signal[chunk] = np.einsum("ij,ij->i", user_vectors[users[chunk]], item_vectors[items[chunk]])
    signal *= np.float32(0.8 / max(float(signal.std()), 1e-12))
    signal += (0.45 * user_bias).astype(np.float32)[users]
    signal += (0.45 * item_bias).astype(np.float32)[items]
    signal -= signal.mean()
    signal /= max(float(signal.std()), 1e-12)
    low, high = rating_scale
    centre = low + (high - low) * 2.0 / 3.0
    spread = (high - low) / 4.5
    signal += np.float32(noise) * rng.standard_normal(len(users), dtype=np.float32)
    signal *= np.float32(spread)
    signal += np.float32(centre - low)
    stars = np.round(signal * 2.0) / 2.0  # half stars above `low`
    return np.clip(stars, 0.0, np.floor((high - low) * 2.0) / 2.0).astype(np.float32) + np.float32(low)


def _catalogue(
    rng: np.random.Generator,
    n_items: int,
    cluster_of_item: np.ndarray,
    n_clusters: int,
    items: np.ndarray,
    ratings: np.ndarray,
    title_rng: np.random.Generator | None = None,
) -> pd.DataFrame:
    """Catalogue with years 1930..2019 (mostly recent), genres and titles: "Synthetic Movie <id>
    (<year>)", or pseudo-titles drawn from `title_rng` when one is given."""
    years = (2019 - np.minimum(rng.exponential(15.0, size=n_items), 89)).astype(np.int64)
    second = rng.integers(0, len(GENRES), size=n_items)
    has_second = (rng.random(n_items) < 0.3) & (second != cluster_of_item)
    genres = [
        (GENRES[c], GENRES[s]) if two else (GENRES[c],)
        for c, s, two in zip(cluster_of_item.tolist(), second.tolist(), has_second.tolist())
    ]
    item_ids = np.arange(1, n_items + 1, dtype=np.int64)
    if title_rng is None:
        titles = [f"Synthetic Movie {i} ({y})" for i, y in zip(item_ids.tolist(), years.tolist())]
    else:
        titles = [f"{name} ({y})" for name, y in zip(pseudo_titles(title_rng, n_items), years.tolist())]
    return make_catalogue(item_ids, titles, genres, items, ratings, years=years.tolist())


def pseudo_titles(rng: np.random.Generator, n: int) -> list[str]:
    """`n` made-up movie titles in the MovieLens form, without the year: "Midnight Garden, The".

    Each title has 1-5 words (mostly 2-3). Three words in four are drawn with weight
    ``1 / rank ** 0.9`` from a fixed vocabulary of about 200 English words, the others are
    made-up names of 2-4 syllables (about 800 thousand possible, so most are rare); 15% move an
    article to the end (", The"), 5% are sequels
    (" 2", " II", " Returns", ...), 8% have a subtitle after a colon, 3% an alternative title in
    parentheses ("(a.k.a. ...)"). Titles may repeat.
    """
    vocabulary = np.array([word.capitalize() for word in _TITLE_WORDS], dtype=object)
    weight = 1.0 / np.arange(1, len(vocabulary) + 1) ** 0.9
    weight /= weight.sum()

    syllables = np.array(_SYLLABLES, dtype=object)

    def phrases(count: int, sizes: tuple[int, ...], shares: tuple[float, ...]) -> list[str]:
        lengths = rng.choice(sizes, size=count, p=shares)
        n_words = int(lengths.sum())
        words = vocabulary[rng.choice(len(vocabulary), size=n_words, p=weight)]
        named = np.flatnonzero(rng.random(n_words) < _NAME_SHARE)
        parts = syllables[rng.integers(0, len(syllables), size=(len(named), 4))]
        keep = rng.integers(2, 5, size=len(named))
        words[named] = ["".join(row[:k]).capitalize() for row, k in zip(parts.tolist(), keep.tolist())]
        ends = np.cumsum(lengths)
        return [" ".join(words[end - length : end]) for end, length in zip(ends.tolist(), lengths.tolist())]

    main = phrases(n, (1, 2, 3, 4, 5), (0.2, 0.35, 0.25, 0.12, 0.08))
    subtitle = phrases(n, (1, 2, 3), (0.3, 0.5, 0.2))
    alternative = phrases(n, (1, 2), (0.5, 0.5))
    has_subtitle = rng.random(n) < 0.08
    has_alternative = rng.random(n) < 0.03
    sequel = np.where(rng.random(n) < 0.05, rng.integers(0, len(_SEQUELS), size=n), -1)
    article = np.where(rng.random(n) < 0.15, rng.integers(0, len(_TRAILING), size=n), -1)
    out = []
    for j in range(n):
        title = main[j]
        if has_subtitle[j]:
            title += f": {subtitle[j]}"
        if sequel[j] >= 0:
            title += _SEQUELS[sequel[j]]
        if article[j] >= 0:
            title += _TRAILING[article[j]]
        if has_alternative[j]:
            title += f" (a.k.a. {alternative[j]})"
        out.append(title)
    return out
