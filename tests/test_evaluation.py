"""Evaluation metrics: hand-computed cases, brute-force references and chunking invariance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from recengine.data.dataset import Dataset, IdMap
from recengine.data.sequences import PAD, last_window, to_token
from recengine.evaluation import (
    RANKING_METRICS,
    evaluate_model,
    evaluate_predictions,
    mae,
    ranking_metrics,
    relevant_items,
    rmse,
    sequence_metrics,
    sequence_mrr,
)

INF = math.inf
TINY_MEMORY = 1e-9  # forces one user (or window) per chunk


# --- fixtures and references ------------------------------------------------------------------
def make_split(n_users: int, n_items: int, train_pairs, test_pairs) -> tuple[Dataset, Dataset]:
    """Train and test Datasets over the same id maps from lists of (user, item) pairs."""
    user_map, item_map = IdMap(np.arange(n_users)), IdMap(np.arange(n_items))

    def build(pairs, part: str) -> Dataset:
        pairs = np.asarray(list(pairs), dtype=np.int64).reshape(-1, 2)
        dataset = Dataset.from_arrays(
            "tiny", pairs[:, 0], pairs[:, 1], np.full(len(pairs), 4.0), user_map=user_map, item_map=item_map
        )
        return dataset.subset(np.arange(len(dataset)), part)

    return build(train_pairs, "train"), build(test_pairs, "test")


def scorer(scores: np.ndarray, calls: list | None = None):
    """A score_fn over a fixed (n_users, n_items) matrix, optionally recording each batch."""
    matrix = torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32))

    def score_fn(user_idx: np.ndarray) -> torch.Tensor:
        if calls is not None:
            calls.append(np.array(user_idx))
        return matrix[torch.from_numpy(np.asarray(user_idx))]

    return score_fn


def reference_ranking(scores, train_pairs, test_pairs, k, users=None) -> dict[str, float] | None:
    """Plain-Python definition: sort each user's candidates, relevant items after tied others."""
    n_users, n_items = scores.shape
    train_sets = [set() for _ in range(n_users)]
    test_sets = [set() for _ in range(n_users)]
    for u, i in train_pairs:
        train_sets[u].add(i)
    for u, i in test_pairs:
        test_sets[u].add(i)
    sums = dict.fromkeys(RANKING_METRICS, 0.0)
    evaluated = 0
    for u in range(n_users):
        if users is not None and u not in set(users):
            continue
        relevant = test_sets[u] - train_sets[u]
        if not relevant:
            continue
        candidates = [i for i in range(n_items) if i not in train_sets[u]]
        ranked = sorted(candidates, key=lambda i: (-float(scores[u][i]), i in relevant))
        positions = [p for p, item in enumerate(ranked, start=1) if item in relevant]
        hits = [p for p in positions if p <= k]
        m = len(relevant)
        ideal = sum(1 / math.log2(i + 1) for i in range(1, min(k, m) + 1))
        sums["precision"] += len(hits) / k
        sums["recall"] += len(hits) / m
        sums["ndcg"] += sum(1 / math.log2(p + 1) for p in hits) / ideal
        sums["map"] += sum(j / p for j, p in enumerate(hits, start=1)) / min(k, m)
        sums["hit"] += 1.0 if hits else 0.0
        sums["mrr"] += 1 / positions[0]
        evaluated += 1
    if evaluated == 0:
        return None
    return {(name if name == "mrr" else f"{name}@{k}"): total / evaluated for name, total in sums.items()}


def reference_sequence(scores, targets, k, exclude=None) -> dict[str, float]:
    """Rank of each target: 1 + other candidates scoring >= it; `exclude[w]` = removed items."""
    sums = {"hit": 0.0, "ndcg": 0.0, "mrr": 0.0}
    for w, target in enumerate(targets):
        removed = set(exclude[w]) - {target} if exclude is not None else set()
        rank = 1 + sum(
            1 for i in range(scores.shape[1]) if i != target and i not in removed and scores[w][i] >= scores[w][target]
        )
        sums["hit"] += rank <= k
        sums["ndcg"] += 1 / math.log2(rank + 1) if rank <= k else 0.0
        sums["mrr"] += 1 / rank
    return {f"hit@{k}": sums["hit"] / len(targets), f"ndcg@{k}": sums["ndcg"] / len(targets), "mrr": sums["mrr"] / len(targets)}


# --- rating error -----------------------------------------------------------------------------
def test_rmse_and_mae_by_hand():
    assert rmse([1, 2, 3], [1, 3, 5]) == pytest.approx(math.sqrt(5 / 3))
    assert mae([1, 2, 3], [1, 3, 5]) == pytest.approx(1.0)
    assert evaluate_predictions(np.array([4.0]), np.array([3.5])) == {"rmse": 0.5, "mae": 0.5}


def test_rating_error_accepts_tensors_and_computes_in_float64():
    truth = torch.tensor([3.0, 4.0], dtype=torch.float32)
    predicted = torch.tensor([3.1, 3.9], dtype=torch.float32)
    expected = math.sqrt(np.mean((np.float64(truth.numpy()) - np.float64(predicted.numpy())) ** 2))
    assert rmse(truth, predicted) == expected


def test_rating_error_rejects_mismatched_and_empty_inputs():
    with pytest.raises(ValueError, match="same length, got 2 and 3"):
        rmse([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="zero pairs"):
        mae([], [])
    with pytest.raises(ValueError, match="1-D"):
        rmse([[1.0]], [[1.0]])


# --- full ranking: hand-computed cases --------------------------------------------------------
def brief_case():
    """One user; items a, b, c, d = 0..3 ranked in that order, relevant {b, d}; item 4 is a
    training item scored highest, which must not take a place in the ranking."""
    train, test = make_split(1, 5, [(0, 4)], [(0, 1), (0, 3)])
    scores = np.array([[4.0, 3.0, 2.0, 1.0, 9.0]])
    return scorer(scores), train, test


def test_hand_case_at_k2():
    score_fn, train, test = brief_case()
    result = ranking_metrics(score_fn, train, test, k=2)
    assert list(result) == ["precision@2", "recall@2", "ndcg@2", "map@2", "hit@2", "mrr"]
    assert result["precision@2"] == pytest.approx(0.5)
    assert result["recall@2"] == pytest.approx(0.5)
    assert result["ndcg@2"] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert result["map@2"] == pytest.approx((1 / 2) / 2)
    assert result["hit@2"] == 1.0
    assert result["mrr"] == pytest.approx(0.5)


def test_hand_case_at_k4():
    score_fn, train, test = brief_case()
    result = ranking_metrics(score_fn, train, test, k=4)
    assert result["precision@4"] == pytest.approx(0.5)
    assert result["recall@4"] == pytest.approx(1.0)
    assert result["map@4"] == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert result["ndcg@4"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3)))
    assert result["mrr"] == pytest.approx(0.5)


def test_means_over_users_and_skips_users_without_test_items():
    # user 0: relevant item ranked 1st; user 1: relevant item ranked 3rd; user 2: no test item;
    # user 3: its only test item is also a training item, so it has nothing relevant either.
    scores = np.array([[3.0, 2.0, 1.0], [3.0, 2.0, 1.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    train, test = make_split(4, 3, [(3, 0)], [(0, 0), (1, 2), (3, 0)])
    result = ranking_metrics(scorer(scores), train, test, k=1)
    assert result["hit@1"] == pytest.approx(0.5)
    assert result["precision@1"] == pytest.approx(0.5)
    assert result["mrr"] == pytest.approx((1 + 1 / 3) / 2)


def test_ties_are_pessimistic():
    # Every item scores the same: the relevant item goes after the three tied others.
    train, test = make_split(1, 4, [], [(0, 0)])
    result = ranking_metrics(scorer(np.zeros((1, 4))), train, test, k=3)
    assert result["mrr"] == pytest.approx(1 / 4)
    assert result["hit@3"] == 0.0
    # Two relevant items tied at the top with one other: they take ranks 2 and 3, not 1 and 2.
    train, test = make_split(1, 4, [], [(0, 0), (0, 1)])
    result = ranking_metrics(scorer(np.array([[1.0, 1.0, 1.0, 0.0]])), train, test, k=2)
    assert result["precision@2"] == pytest.approx(0.5)
    assert result["mrr"] == pytest.approx(1 / 2)
    assert result["map@2"] == pytest.approx((1 / 2) / 2)


def test_test_items_seen_in_training_leave_the_relevant_set():
    train, test = make_split(1, 4, [(0, 0)], [(0, 0), (0, 2), (0, 2)])  # duplicate test pair counts once
    indptr, items = relevant_items(train, test)
    assert indptr.tolist() == [0, 1] and items.tolist() == [2]
    result = ranking_metrics(scorer(np.array([[9.0, 1.0, 2.0, 0.0]])), train, test, k=1)
    assert result["recall@1"] == 1.0 and result["mrr"] == 1.0


def test_k_larger_than_the_catalogue():
    train, test = make_split(1, 3, [(0, 0)], [(0, 2)])
    result = ranking_metrics(scorer(np.array([[0.0, 2.0, 1.0]])), train, test, k=10)
    assert result["precision@10"] == pytest.approx(1 / 10)
    assert result["recall@10"] == 1.0
    assert result["ndcg@10"] == pytest.approx(1 / math.log2(3))
    assert result["map@10"] == pytest.approx(1 / 2)


def test_infinite_scores_rank_at_the_ends():
    # -inf on a relevant item: after every candidate, but training items still do not count.
    train, test = make_split(1, 5, [(0, 0), (0, 1)], [(0, 4)])
    result = ranking_metrics(scorer(np.array([[-INF, -INF, 1.0, -INF, -INF]])), train, test, k=3)
    assert result["mrr"] == pytest.approx(1 / 3)
    assert result["hit@3"] == 1.0
    train, test = make_split(1, 3, [], [(0, 2)])
    assert ranking_metrics(scorer(np.array([[INF, 0.0, INF]])), train, test)["mrr"] == pytest.approx(1 / 2)


def test_metric_subset_and_users_subset():
    score_fn, train, test = brief_case()
    assert list(ranking_metrics(score_fn, train, test, k=4, metrics=["mrr", "ndcg"])) == ["ndcg@4", "mrr"]
    scores = np.array([[3.0, 2.0, 1.0], [3.0, 2.0, 1.0]])
    train, test = make_split(2, 3, [], [(0, 0), (1, 2)])
    assert ranking_metrics(scorer(scores), train, test, users=[1, 1])["mrr"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="no user to evaluate"):
        ranking_metrics(scorer(scores), make_split(2, 3, [], [])[0], make_split(2, 3, [], [])[1])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, "k must be a positive integer"),
        ({"memory_mb": 0}, "memory_mb must be a positive"),
        ({"metrics": ["auc"]}, r"metrics must be drawn from \['precision'"),
        ({"users": [5]}, "users must be user indices in 0..0"),
    ],
)
def test_argument_errors(kwargs, message):
    score_fn, train, test = brief_case()
    with pytest.raises(ValueError, match=message):
        ranking_metrics(score_fn, train, test, **kwargs)


def test_score_fn_errors_name_the_problem():
    _, train, test = brief_case()
    with pytest.raises(ValueError, match=r"shape \(1, 5\).*got shape \(1, 4\)"):
        ranking_metrics(lambda users: torch.zeros(len(users), 4), train, test)
    with pytest.raises(ValueError, match="NaN"):
        ranking_metrics(lambda users: torch.full((len(users), 5), math.nan), train, test)


def test_score_matrix_is_not_modified_and_views_are_accepted():
    base = torch.tensor([4.0, 3.0, 2.0, 1.0, 9.0])
    _, train, test = brief_case()
    result = ranking_metrics(lambda users: base.expand(len(users), -1), train, test, k=4)  # a broadcast view
    assert result["mrr"] == pytest.approx(0.5)
    assert base.tolist() == [4.0, 3.0, 2.0, 1.0, 9.0]
    as_numpy = ranking_metrics(lambda users: np.tile(base.numpy().astype(np.float64), (len(users), 1)), train, test, k=4)
    assert as_numpy == result


def test_chunks_respect_memory_and_cover_each_user_once():
    n_users, n_items = 10, 1024
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(n_users, n_items))
    test_pairs = [(u, int(i)) for u in range(n_users) if u != 4 for i in rng.choice(n_items, 3, replace=False)]
    train, test = make_split(n_users, n_items, [(u, 0) for u in range(n_users)], test_pairs)
    calls: list[np.ndarray] = []
    three_rows = 3 * 2 * 4 * n_items / 2**20  # score matrix and its masked copy, float32
    chunked = ranking_metrics(scorer(scores, calls), train, test, memory_mb=three_rows)
    assert [len(c) for c in calls] == [3, 3, 3]
    assert all(c.dtype == np.int64 for c in calls)
    assert np.concatenate(calls).tolist() == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert chunked == pytest.approx(ranking_metrics(scorer(scores), train, test))


# --- full ranking: brute-force reference on random data ---------------------------------------
@st.composite
def ranking_cases(draw):
    n_users = draw(st.integers(1, 6))
    n_items = draw(st.integers(1, 8))
    # Few distinct values, so ties are everywhere; infinities included.
    scores = draw(arrays(np.float32, (n_users, n_items), elements=st.sampled_from([-INF, -1.0, 0.0, 0.5, 1.0, INF])))
    pair = st.tuples(st.integers(0, n_users - 1), st.integers(0, n_items - 1))
    train_pairs = draw(st.lists(pair, max_size=3 * n_users))
    test_pairs = draw(st.lists(pair, max_size=3 * n_users))
    k = draw(st.integers(1, 10))
    return scores, train_pairs, test_pairs, k


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ranking_cases())
def test_ranking_matches_brute_force_for_any_chunk_size(case):
    scores, train_pairs, test_pairs, k = case
    train, test = make_split(*scores.shape, train_pairs, test_pairs)
    expected = reference_ranking(scores, train_pairs, test_pairs, k)
    if expected is None:
        with pytest.raises(ValueError, match="no user to evaluate"):
            ranking_metrics(scorer(scores), train, test, k=k)
        return
    for memory_mb in (TINY_MEMORY, 2 * 2 * 4 * scores.shape[1] / 2**20, 256):
        assert ranking_metrics(scorer(scores), train, test, k=k, memory_mb=memory_mb) == pytest.approx(expected, abs=1e-12)


@settings(max_examples=50, deadline=None)
@given(ranking_cases(), st.data())
def test_users_argument_matches_brute_force(case, data):
    scores, train_pairs, test_pairs, k = case
    users = data.draw(st.lists(st.integers(0, scores.shape[0] - 1), min_size=1))
    expected = reference_ranking(scores, train_pairs, test_pairs, k, users=users)
    if expected is not None:
        train, test = make_split(*scores.shape, train_pairs, test_pairs)
        result = ranking_metrics(scorer(scores), train, test, k=k, users=np.array(users), memory_mb=TINY_MEMORY)
        assert result == pytest.approx(expected, abs=1e-12)


def test_random_continuous_scores_match_brute_force():
    rng = np.random.default_rng(7)
    n_users, n_items = 40, 60
    scores = rng.normal(size=(n_users, n_items)).astype(np.float32)
    train_pairs = [(int(u), int(i)) for u, i in zip(rng.integers(0, n_users, 600), rng.integers(0, n_items, 600))]
    test_pairs = [(int(u), int(i)) for u, i in zip(rng.integers(0, n_users, 300), rng.integers(0, n_items, 300))]
    train, test = make_split(n_users, n_items, train_pairs, test_pairs)
    for k in (1, 5, 20):
        expected = reference_ranking(scores, train_pairs, test_pairs, k)
        assert ranking_metrics(scorer(scores), train, test, k=k, memory_mb=0.001) == pytest.approx(expected, abs=1e-12)


# --- evaluate_model ---------------------------------------------------------------------------
class FixedScores:
    """A stand-in model whose predictions and scores come from one matrix."""

    def __init__(self, scores: np.ndarray, explicit: bool) -> None:
        self.scores, self.explicit = scores.astype(np.float32), explicit
        self.predict_calls = 0

    def predict(self, user_idx, item_idx):
        self.predict_calls += 1
        return self.scores[user_idx, item_idx]

    def score_users(self, user_idx):
        return torch.from_numpy(self.scores[user_idx])


def test_evaluate_model_adds_rating_error_for_explicit_models():
    rng = np.random.default_rng(3)
    scores = rng.uniform(1, 5, size=(6, 9))
    train, test = make_split(6, 9, [(u, u) for u in range(6)], [(u, (u + 1) % 9) for u in range(6)] + [(0, 5), (2, 7)])
    test = Dataset.from_arrays(
        "tiny", test.users, test.items, rng.integers(1, 6, len(test)), user_map=test.user_map, item_map=test.item_map
    )
    model = FixedScores(scores, explicit=True)
    result = evaluate_model(model, train, test, k=3, batch_size=3)
    assert model.predict_calls == 3  # 8 pairs, 3 at a time
    assert list(result) == ["rmse", "mae", "precision@3", "recall@3", "ndcg@3", "map@3", "hit@3", "mrr"]
    assert result["rmse"] == pytest.approx(rmse(test.ratings, scores[test.users, test.items].astype(np.float32)))
    assert result["mae"] == pytest.approx(mae(test.ratings, scores[test.users, test.items].astype(np.float32)))
    ranking = ranking_metrics(model.score_users, train, test, k=3)
    assert {key: result[key] for key in ranking} == ranking
    implicit = evaluate_model(FixedScores(scores, explicit=False), train, test, k=3)
    assert "rmse" not in implicit and implicit == ranking


# --- next item --------------------------------------------------------------------------------
def test_sequence_hand_case():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.5]])
    histories, targets = np.array([[0, 1]]), np.array([2])
    # Items 1 (0.9) and 3 (tied 0.5) are ranked ahead of the target: rank 3.
    result = sequence_metrics(lambda h: scores, histories, targets, k=3)
    assert result == pytest.approx({"hit@3": 1.0, "ndcg@3": 1 / math.log2(4), "mrr": 1 / 3})
    assert sequence_metrics(lambda h: scores, histories, targets, k=2)["hit@2"] == 0.0
    assert sequence_mrr(lambda h: scores, histories, targets) == pytest.approx(1 / 3)


def window_scorer(scores: np.ndarray, calls: list | None = None):
    """A score_fn for windows scored in order: each call gets the next rows of `scores`."""
    matrix = torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32))
    done = [0]

    def score_fn(windows: np.ndarray) -> torch.Tensor:
        if calls is not None:
            calls.append(np.array(windows))
        start, done[0] = done[0], done[0] + len(windows)
        return matrix[start : done[0]]

    return score_fn


def test_sequence_excludes_history_items_but_never_the_target():
    scores = np.array([[0.1, 0.9, 0.5, 0.5], [0.1, 0.9, 0.5, 0.5]])
    # Window 0 holds item 1 (and padding); window 1 holds item 1 twice and the target 2 itself.
    histories = np.array([[PAD, PAD, *to_token([1])], [*to_token([1, 2, 1])]])
    targets = np.array([2, 2])
    assert np.array_equal(histories[0], last_window([1], 3))
    assert sequence_mrr(window_scorer(scores), histories, targets) == pytest.approx(1 / 3)
    # Item 1 leaves the candidates: only item 3 (tied) is still ahead of the target.
    assert sequence_mrr(window_scorer(scores), histories, targets, exclude_history=True) == pytest.approx(1 / 2)


def test_sequence_rejects_tokens_outside_the_catalogue():
    with pytest.raises(ValueError, match="histories must hold tokens in 0..3"):
        sequence_metrics(lambda h: torch.zeros(len(h), 3), np.array([[0, 4]]), np.array([0]), exclude_history=True)


@st.composite
def sequence_cases(draw):
    n_windows, n_items, length = draw(st.integers(1, 6)), draw(st.integers(1, 8)), draw(st.integers(1, 4))
    scores = draw(arrays(np.float32, (n_windows, n_items), elements=st.sampled_from([-INF, -1.0, 0.0, 1.0, INF])))
    items = draw(arrays(np.int64, (n_windows, length), elements=st.integers(-1, n_items - 1)))  # -1: padding
    targets = draw(arrays(np.int64, (n_windows,), elements=st.integers(0, n_items - 1)))
    return scores, items, targets, draw(st.integers(1, 10))


@settings(max_examples=100, deadline=None)
@given(sequence_cases(), st.booleans())
def test_sequence_metrics_match_brute_force(case, exclude_history):
    scores, items, targets, k = case
    histories = np.where(items < 0, PAD, to_token(items))
    exclude = [set(row[row >= 0].tolist()) for row in items] if exclude_history else None
    expected = reference_sequence(scores, targets, k, exclude)
    for memory_mb in (TINY_MEMORY, 256):
        calls: list[np.ndarray] = []
        result = sequence_metrics(
            window_scorer(scores, calls), histories, targets, k=k, exclude_history=exclude_history, memory_mb=memory_mb
        )
        assert result == pytest.approx(expected, abs=1e-12)
        assert np.array_equal(np.concatenate(calls), histories)


def test_sequence_means_over_windows_and_chunks():
    rng = np.random.default_rng(1)
    n_windows, n_items = 25, 512
    scores = rng.normal(size=(n_windows, n_items)).astype(np.float32)
    scores[:, :3] = 0.0  # some ties
    histories = to_token(rng.integers(0, n_items, (n_windows, 4)))
    targets = rng.integers(0, n_items, n_windows)
    targets[:5] = 1
    expected = reference_sequence(scores, targets, k=10)
    calls: list[np.ndarray] = []
    four_rows = 4 * 4 * n_items / 2**20
    assert sequence_metrics(window_scorer(scores, calls), histories, targets, memory_mb=four_rows) == pytest.approx(expected, abs=1e-12)
    assert [len(c) for c in calls] == [1, 4, 4, 4, 4, 4, 4]  # the first window alone tells n_items
    assert sequence_metrics(window_scorer(scores), histories, targets) == pytest.approx(expected, abs=1e-12)


def test_sequence_argument_errors():
    score_fn = lambda h: torch.zeros(len(h), 3)  # noqa: E731
    with pytest.raises(ValueError, match="targets must be item indices in 0..2"):
        sequence_metrics(score_fn, np.zeros((2, 2), dtype=np.int64), np.array([0, 3]))
    with pytest.raises(ValueError, match="one item per window"):
        sequence_metrics(score_fn, np.zeros((2, 2), dtype=np.int64), np.array([0]))
    with pytest.raises(ValueError, match="histories must be an integer array"):
        sequence_metrics(score_fn, np.zeros(2), np.array([0, 1]))
    with pytest.raises(ValueError, match="NaN"):
        sequence_metrics(lambda h: torch.full((len(h), 3), math.nan), np.zeros((1, 2), dtype=np.int64), np.array([0]))
