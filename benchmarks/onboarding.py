"""How good are a newcomer's recommendations after k onboarding answers?

Simulates the onboarding page on ml-100k: 10% of the users are held out whole (seed 42,
`split_by_user`), matrix factorisation is trained on the others, and every held-out user plays
a newcomer. For k = 0, 5, 10, 20 the user reveals k of their ratings and the model folds them
in; the figures are over the user's *remaining* ratings:

* ndcg@10: full-ranking NDCG@10 (`recengine.evaluation.ranking_metrics`: the remaining rated
  items are the relevant ones, pessimistic ties) of the ranking the Recommendations page shows
  by default: `recengine.recommend.ranking_values` with `DEFAULT_NOVELTY` (the model's score
  blended with log popularity) over the movies with at least `DEFAULT_MIN_RATINGS` ratings,
  the revealed ones excluded, popularity counted in the training part; after revealing k movies picked the onboarding page's way: walk `onboarding_order`
  and keep the first k the user has rated, as a person skips the movies they have not seen
  (a user who has seen fewer than k of the asked movies reveals fewer);
* popularity: the same NDCG@10 for ranking by training popularity (same revealed movies
  excluded), what a newcomer gets with no personalisation;
* random: NDCG@10 of the same ranking when the k revealed movies are a random choice among
  the user's ratings;
* rmse: RMSE of the folded-in predicted ratings (clipped to the rating scale; the popularity
  blend only orders the list and never changes a prediction) on the remaining ratings after
  the onboarding reveal (explicit models only; "n/a" for implicit ones such as als).

Onboarding and random reveals leave different movies to find: the onboarding page asks about
well-known movies, so a user's popular movies leave the targets, while a random reveal leaves
them in, and they are the easiest to rank. The per-k diagnostic lines therefore also compare
both reveals on the same targets (the ratings neither revealed, both reveals excluded from
the candidates), and give the onboarding effort: movies shown to collect the k answers.

The last lines read `k=K ndcg@10=X popularity=Y random=Z rmse=R`. Target: at k=10, ndcg@10 at
least 1.5x popularity's and above random's; the exit status is 1 when it is not met.

`--tune` is how `DEFAULT_NOVELTY` was chosen: it carves validation users (10%, seed 1) out of
the training users, fits the model on the rest and prints mean NDCG@10 over k = 5, 10, 20 for
a grid of novelty values; the held-out test users play no part in it.

    RECENGINE_DATA_DIR=/path/to/datasets python benchmarks/onboarding.py [--model mf|als] [--tune] [--device cpu]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recengine.data.dataset import Dataset  # noqa: E402
from recengine.evaluation import ranking_metrics, rmse  # noqa: E402
from recengine.models.base import Recommender  # noqa: E402
from recengine.recommend import DEFAULT_MIN_RATINGS, DEFAULT_NOVELTY, NOVELTY_RANGE, ranking_values  # noqa: E402

KS = (0, 5, 10, 20)
TARGET_K = 10
TARGET_RATIO = 1.5

Reveal = Callable[[np.ndarray, np.ndarray], np.ndarray]


# --- choosing what a newcomer reveals ---------------------------------------------------------
def reveal_by_order(order: np.ndarray, user_items: np.ndarray, k: int) -> np.ndarray:
    """Positions in `user_items` of the first `k` items of `order` the user has rated (int64).

    This is the onboarding page as a person uses it: movies come in `order`, the person rates
    the ones they have seen and skips the rest. Fewer than k come back when the person has seen
    fewer than k of the ordered movies.
    """
    user_items = np.asarray(user_items, dtype=np.int64)
    order = np.asarray(order, dtype=np.int64)
    seen = order[np.isin(order, user_items)][: max(0, int(k))]
    position_of = {item: position for position, item in enumerate(user_items.tolist())}
    return np.array([position_of[item] for item in seen.tolist()], dtype=np.int64)


def movies_shown(order: np.ndarray, user_items: np.ndarray, k: int) -> int:
    """How many movies of `order` a person walks through to rate `k` of them (all of `order`
    when they have seen fewer than k): the onboarding effort, including the skipped ones."""
    if k <= 0:
        return 0
    seen_at = np.flatnonzero(np.isin(np.asarray(order, dtype=np.int64), np.asarray(user_items, dtype=np.int64)))
    return int(seen_at[k - 1] + 1) if len(seen_at) >= k else len(order)


def reveal_random(user_items: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Positions of `min(k, len(user_items))` of the user's items drawn uniformly without replacement."""
    return rng.choice(len(user_items), size=min(max(0, int(k)), len(user_items)), replace=False).astype(np.int64)


def split_newcomers(heldout: Dataset, choose: Reveal) -> tuple[Dataset, Dataset]:
    """(revealed, remaining): each held-out user's ratings split by `choose(items, ratings) -> positions`.

    Both parts keep `heldout`'s id maps and catalogue, so they plug into `ranking_metrics`
    as (train, test).
    """
    indptr, items, ratings = heldout.user_item_csr()
    order = np.lexsort((heldout.items, heldout.users))  # rows in the CSR's order
    revealed = np.zeros(len(heldout), dtype=bool)
    for user in np.flatnonzero(np.diff(indptr)).tolist():
        start, end = int(indptr[user]), int(indptr[user + 1])
        positions = choose(items[start:end], ratings[start:end])
        revealed[order[start + positions]] = True
    return heldout.subset(revealed, "revealed"), heldout.subset(~revealed, "remaining")


def profiles(revealed: Dataset) -> dict[int, dict[int, float]]:
    """{user: {item: rating}} of the revealed ratings (users with none are absent)."""
    indptr, items, ratings = revealed.user_item_csr()
    return {
        user: dict(zip(items[indptr[user] : indptr[user + 1]].tolist(), ratings[indptr[user] : indptr[user + 1]].tolist()))
        for user in np.flatnonzero(np.diff(indptr)).tolist()
    }


# --- scoring newcomers ------------------------------------------------------------------------
def folded_scores(model: Recommender, known: Mapping[int, Mapping[int, float]]) -> Callable[[np.ndarray], torch.Tensor]:
    """A `ranking_metrics` score function: each user's scores after folding in `known[user]`
    (an empty profile for users without revealed ratings)."""

    def score(users: np.ndarray) -> torch.Tensor:
        return torch.stack([model.score_folded(model.fold_in(known.get(int(u), {}))).float().cpu() for u in users])

    return score


def product_scores(
    model: Recommender,
    known: Mapping[int, Mapping[int, float]],
    popularity: np.ndarray,
    keep: np.ndarray,
    novelty: float,
) -> Callable[[np.ndarray], torch.Tensor]:
    """A `ranking_metrics` score function ranking as `recommend_profile` does: each user's
    `ranking_values` after folding in `known[user]`, candidates `keep` (n_items,) bool without
    the user's revealed items; items outside them get -inf (bottom of the ranking)."""

    def score(users: np.ndarray) -> torch.Tensor:
        scores = torch.stack([model.score_folded(model.fold_in(known.get(int(u), {}))).double().cpu() for u in users]).numpy()
        candidates = np.broadcast_to(keep, scores.shape).copy()
        for row, user in enumerate(users.tolist()):
            candidates[row, list(known.get(int(user), {}))] = False
        return torch.as_tensor(ranking_values(scores, popularity, candidates, novelty))

    return score


def constant_scores(item_scores: np.ndarray) -> Callable[[np.ndarray], torch.Tensor]:
    """A `ranking_metrics` score function giving every user the same item scores (n_items,)."""
    row = torch.as_tensor(np.asarray(item_scores, dtype=np.float32))

    def score(users: np.ndarray) -> torch.Tensor:
        return row.expand(len(users), -1)

    return score


def folded_rmse(model: Recommender, known: Mapping[int, Mapping[int, float]], remaining: Dataset) -> float:
    """RMSE of fold-in predictions, clipped to the model's rating scale, on `remaining`'s ratings."""
    indptr, items, ratings = remaining.user_item_csr()
    low, high = model.rating_scale
    predicted, truth = [], []
    for user in np.flatnonzero(np.diff(indptr)).tolist():
        rows = slice(int(indptr[user]), int(indptr[user + 1]))
        scores = model.score_folded(model.fold_in(known.get(user, {}))).float().cpu().numpy()
        predicted.append(np.clip(scores[items[rows]], low, high))
        truth.append(ratings[rows])
    return rmse(np.concatenate(truth), np.concatenate(predicted))


@dataclass(frozen=True)
class NewcomerResult:
    """Figures for one k.

    ndcg, popularity, random, rmse: as in the module docstring. revealed: mean number of
    movies the onboarding reveal found per user; shown: mean number of movies of the order a
    user walks through to find them (`movies_shown`). ndcg_common, random_common: NDCG@10 of the
    onboarding and of the random reveal on the *same* targets, the remaining ratings revealed
    by neither, with both reveals excluded from the candidates (a diagnostic: the plain figures
    rank different targets, since onboarding reveals a user's popular movies and random ones
    leave them in the targets).
    """

    k: int
    ndcg: float
    popularity: float
    random: float
    rmse: float
    revealed: float
    shown: float
    ndcg_common: float
    random_common: float

    def line(self) -> str:
        error = "n/a" if np.isnan(self.rmse) else f"{self.rmse:.4f}"
        return f"k={self.k} ndcg@10={self.ndcg:.4f} popularity={self.popularity:.4f} random={self.random:.4f} rmse={error}"


def evaluate_newcomers(
    model: Recommender,
    train: Dataset,
    heldout: Dataset,
    order: np.ndarray,
    ks: Sequence[int] = KS,
    seed: int = 42,
    cutoff: int = 10,
    novelty: float = DEFAULT_NOVELTY,
    min_ratings: int = DEFAULT_MIN_RATINGS,
) -> list[NewcomerResult]:
    """The benchmark's figures for each k (see the module docstring) on held-out users `heldout`;
    `novelty` and `min_ratings` are the page's ranking settings (default: the page's defaults)."""
    counts = train.item_popularity()
    popularity = counts.astype(np.float32)
    keep = counts >= min_ratings
    metric = f"ndcg@{cutoff}"

    def ranked(known: Mapping[int, Mapping[int, float]]) -> Callable[[np.ndarray], torch.Tensor]:
        return product_scores(model, known, counts, keep, novelty)

    def ndcg(score_fn: Callable[[np.ndarray], torch.Tensor], excluded: Dataset, targets: Dataset) -> float:
        if len(targets) == 0:
            return float("nan")
        return ranking_metrics(score_fn, excluded, targets, k=cutoff, metrics=["ndcg"])[metric]

    users = np.unique(heldout.users)
    results = []
    for k in ks:
        revealed, remaining = split_newcomers(heldout, lambda items, ratings: reveal_by_order(order, items, k))
        rng = np.random.default_rng(seed + k)
        random_revealed, random_remaining = split_newcomers(heldout, lambda items, ratings: reveal_random(items, k, rng))
        known, random_known = profiles(revealed), profiles(random_revealed)
        either = _rows(heldout, revealed) | _rows(heldout, random_revealed)
        excluded, common = heldout.subset(either, "revealed by either"), heldout.subset(~either, "revealed by neither")
        results.append(
            NewcomerResult(
                k=int(k),
                ndcg=ndcg(ranked(known), revealed, remaining),
                popularity=ndcg(constant_scores(popularity), revealed, remaining),
                random=ndcg(ranked(random_known), random_revealed, random_remaining),
                rmse=folded_rmse(model, known, remaining) if model.explicit else float("nan"),
                revealed=len(revealed) / max(1, len(users)),
                shown=float(np.mean([movies_shown(order, heldout.items_of(u), k) for u in users])),
                ndcg_common=ndcg(ranked(known), excluded, common),
                random_common=ndcg(ranked(random_known), excluded, common),
            )
        )
    return results


def _rows(whole: Dataset, part: Dataset) -> np.ndarray:
    """Boolean mask over `whole`'s rows of the (user, item) pairs present in `part`."""
    keys = whole.users.astype(np.int64) * whole.n_items + whole.items
    return np.isin(keys, part.users.astype(np.int64) * part.n_items + part.items)


def time_recommend(model: Recommender, catalogue, profile: Mapping[int, float], repeats: int = 20) -> float:
    """Median milliseconds of `recommend_profile(k=20, explain=True)` for `profile`."""
    from recengine.recommend import recommend_profile

    recommend_profile(model, catalogue, profile, k=20)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        recommend_profile(model, catalogue, profile, k=20)
        times.append(time.perf_counter() - started)
    return float(np.median(times) * 1000)


def tune_novelty(model: Recommender, train: Dataset, valid: Dataset, order: np.ndarray, seed: int = 42) -> int:
    """Print mean NDCG@10 over k = 5, 10, 20 of the onboarding reveal on validation users for a
    grid of novelty values and the best one (the rule behind `DEFAULT_NOVELTY`)."""
    grid = np.round(np.arange(NOVELTY_RANGE[0], 0.5 + 1e-9, 0.05), 2)
    means = []
    for novelty in grid.tolist():
        results = evaluate_newcomers(model, train, valid, order, ks=(5, 10, 20), seed=seed, novelty=novelty)
        means.append(float(np.mean([r.ndcg for r in results])))
        print(f"novelty={novelty:+.2f} " + " ".join(f"k={r.k}:{r.ndcg:.4f}" for r in results) + f" mean={means[-1]:.4f}", flush=True)
    best = float(grid[int(np.argmax(means))])
    print(f"best novelty on validation users: {best:+.2f} (mean ndcg@10 {max(means):.4f}); DEFAULT_NOVELTY is {DEFAULT_NOVELTY:+.2f}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--seed", type=int, default=42, help="seed of the held-out users and the random reveals")
    parser.add_argument("--fraction", type=float, default=0.1, help="share of users held out whole")
    parser.add_argument("--model", default="mf", help="registered model name (default: the app's default, mf)")
    parser.add_argument("--epochs", type=int, default=None, help="MF epochs (default: MFConfig's)")
    parser.add_argument("--tune", action="store_true", help="choose the novelty default on validation users, then stop")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # tiny per-user tensor operations; a shared machine's thread pool only slows them

    from recengine.data.movielens import load_dataset
    from recengine.data.splits import split_by_user
    from recengine.models.base import create_model, describe_device, resolve_device
    from recengine.onboarding import onboarding_order

    data = load_dataset(args.dataset)
    split = split_by_user(data, test_fraction=args.fraction, seed=args.seed)
    train, heldout = split.train, split.test
    if args.tune:  # validation users carved out of the training users; the test users stay unseen
        split = split_by_user(train, test_fraction=args.fraction, seed=1)
        train, heldout = split.train, split.test
    n_heldout = len(np.unique(heldout.users))
    device = resolve_device(args.device)
    role = "validation users (from the training users)" if args.tune else "users held out whole"
    print(f"{data!r}: {n_heldout} {role} (seed {args.seed}), {args.model} trained on {train!r} on {describe_device(device)}")

    hyper = {} if args.epochs is None else {"epochs": args.epochs}
    started = time.perf_counter()
    model = create_model(args.model, device=device, **hyper).fit(train)
    print(f"{args.model}: {model.config}; fitted in {time.perf_counter() - started:.1f} s")

    started = time.perf_counter()
    order = onboarding_order(model, train)
    print(f"onboarding order: {len(order)} movies in {1000 * (time.perf_counter() - started):.0f} ms; first 6: {train.titles(order[:6])}")

    if args.tune:
        return tune_novelty(model, train, heldout, order, seed=args.seed)

    print(
        f"ranking as the Recommendations page does by default: novelty={DEFAULT_NOVELTY} (recengine.recommend.DEFAULT_NOVELTY), "
        f"at least {DEFAULT_MIN_RATINGS} ratings (DEFAULT_MIN_RATINGS, counted in training), diversity=0; "
        f"model defaults as printed above"
    )
    started = time.perf_counter()
    results = evaluate_newcomers(model, train, heldout, order, KS, seed=args.seed)
    print(f"evaluated {len(KS)} values of k in {time.perf_counter() - started:.1f} s")
    for result in results:
        print(
            f"  k={result.k}: {result.revealed:.1f} movies rated per user out of {result.shown:.1f} shown; on the targets neither reveal "
            f"used: onboarding ndcg@10={result.ndcg_common:.4f} random={result.random_common:.4f}"
        )

    indptr, items, ratings = heldout.user_item_csr()
    first = int(np.flatnonzero(np.diff(indptr) >= 20)[0])
    profile = dict(zip(items[indptr[first] : indptr[first] + 20].tolist(), ratings[indptr[first] : indptr[first] + 20].tolist()))
    threads = torch.get_num_threads()
    timings = [f"{time_recommend(model, data.catalogue, profile):.1f} ms with {threads} torch threads"]
    if threads > 1:  # tiny tensor operations can suffer from a busy machine's thread pool
        torch.set_num_threads(1)
        timings.append(f"{time_recommend(model, data.catalogue, profile):.1f} ms with 1")
        torch.set_num_threads(threads)
    print(f"recommend_profile (20 ratings, k=20, with reasons), median: {', '.join(timings)}")

    at_target = next(r for r in results if r.k == TARGET_K)
    met = at_target.ndcg >= TARGET_RATIO * at_target.popularity and at_target.ndcg > at_target.random
    print(
        f"target at k={TARGET_K}: ndcg@10 >= {TARGET_RATIO}x popularity ({TARGET_RATIO * at_target.popularity:.4f}) "
        f"and > random ({at_target.random:.4f}): {'met' if met else 'NOT met'} ({at_target.ndcg / max(at_target.popularity, 1e-12):.2f}x)"
    )
    for result in results:
        print(result.line())
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
