"""`recengine.recommend.watch_next` and `next_item_chances`: the recommendations page's "watch next" list.

A hand-made next-item model (the next item's score depends on the last movie watched only) gives
chances and reasons that can be written down; tiny trained sequence models check the function
against a brute-force softmax of the model's own scores and the order of the profile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import torch

from recengine.data.dataset import IdMap, make_catalogue
from recengine.data.synthetic import generate_synthetic
from recengine.models.base import Recommender, create_model
from recengine.recommend import RecommendationFilter, next_item_chances, watch_next


@dataclass(frozen=True)
class NoConfig:
    """The hand-made model has no hyper-parameters."""


class LastItemModel(Recommender):
    """score(i | history) = transitions[last item of history, i]; an empty history scores `bias`.

    `fold_in` keeps the whole history in the order rated, so leaving out any movie but the last
    changes nothing, and leaving out the last makes the one before it the last.
    """

    name: ClassVar[str] = "last-item"
    Config: ClassVar[type] = NoConfig
    explicit: ClassVar[bool] = False
    sequential: ClassVar[bool] = True

    def __init__(self, transitions: np.ndarray, bias: np.ndarray) -> None:
        super().__init__(NoConfig(), device="cpu")
        self.transitions = np.asarray(transitions, dtype=np.float64)
        self.bias = np.asarray(bias, dtype=np.float64)
        self.item_map = IdMap(np.arange(len(self.bias)))
        self.user_map = IdMap(np.arange(1))

    def _fit(self, train, valid, on_epoch) -> None:
        raise TypeError("LastItemModel is built with its scores, not trained")

    def fold_in(self, ratings) -> np.ndarray:
        return np.array([int(item) for item in self._validate_new_ratings(ratings)], dtype=np.int64)

    def score_folded(self, user_repr) -> torch.Tensor:
        history = np.asarray(user_repr)
        return torch.from_numpy(self.transitions[history[-1]] if len(history) else self.bias)

    def item_factors(self) -> np.ndarray:
        return np.eye(len(self.bias), dtype=np.float32)

    def score_users(self, user_idx) -> torch.Tensor:
        return torch.from_numpy(self.bias).expand(len(user_idx), -1)

    def predict(self, user_idx, item_idx) -> np.ndarray:
        return self.bias[np.asarray(item_idx)].astype(np.float32)

    def _state(self) -> dict[str, torch.Tensor]:
        return {}

    def _restore(self, state) -> None:
        pass


class NotSequential(LastItemModel):
    sequential: ClassVar[bool] = False
    name: ClassVar[str] = "not-sequential"


# Five movies. After movie 1, movies 2, 3, 4 come next with odds 6 : 3 : 1; after movie 0, with
# odds 1 : 1 : 8. Movies 0 and 1 themselves get scores that must not matter once rated.
TRANSITIONS = np.full((5, 5), -1.0)
TRANSITIONS[1, 2:] = np.log([6.0, 3.0, 1.0])
TRANSITIONS[0, 2:] = np.log([1.0, 1.0, 8.0])
TRANSITIONS[1, :2] = TRANSITIONS[0, :2] = 5.0  # already rated: excluded before the softmax
BIAS = np.log([4.0, 3.0, 1.0, 1.0, 1.0])
GENRES = [("Drama",), ("Drama",), ("Comedy",), ("Drama",), ("Drama", "Comedy")]


def catalogue():
    titles = [f"Movie {letter} (199{n})" for n, letter in enumerate("ABCDE")]
    return make_catalogue(np.arange(5), titles, GENRES, np.arange(5), np.full(5, 3.0))


@pytest.fixture
def hand_made() -> LastItemModel:
    return LastItemModel(TRANSITIONS, BIAS)


def test_the_list_follows_the_last_movie_with_hand_computed_chances(hand_made):
    picks = watch_next(hand_made, catalogue(), {0: 4.0, 1: 5.0}, k=3)
    assert [rec.item_idx for rec in picks] == [2, 3, 4]
    assert np.allclose([rec.score for rec in picks], [0.6, 0.3, 0.1])
    assert [rec.title for rec in picks] == ["Movie C (1992)", "Movie D (1993)", "Movie E (1994)"]
    assert picks[0].year == 1992 and picks[2].genres == ("Drama", "Comedy")
    assert all(rec.predicted_rating is None and not rec.exact_reasons for rec in picks)
    # Leaving out movie 1 (the last) makes movie 0 the last: chances 0.1, 0.1, 0.8. Leaving out
    # movie 0 changes nothing.
    reasons = {rec.item_idx: [(r.item_idx, r.rating, round(r.contribution, 12)) for r in rec.reasons] for rec in picks}
    assert reasons[2] == [(1, 5.0, 0.5), (0, 4.0, 0.0)]
    assert reasons[3] == [(1, 5.0, 0.2), (0, 4.0, 0.0)]
    assert reasons[4] == [(0, 4.0, 0.0), (1, 5.0, -0.7)]
    assert picks[0].reasons[0].title == "Movie B (1991)"


def test_the_order_of_the_ratings_is_the_viewing_order(hand_made):
    picks = watch_next(hand_made, catalogue(), {1: 5.0, 0: 4.0}, k=3)  # movie 0 watched last
    assert [rec.item_idx for rec in picks] == [4, 2, 3]  # ties (0.1, 0.1) to the lower index
    assert np.allclose([rec.score for rec in picks], [0.8, 0.1, 0.1])
    assert [r.item_idx for r in picks[0].reasons] == [0, 1]


def test_filters_and_k_cut_the_list_without_renormalising(hand_made):
    comedies = RecommendationFilter(genres=("Comedy",))
    picks = watch_next(hand_made, catalogue(), {0: 4.0, 1: 5.0}, k=5, filters=comedies)
    assert [(rec.item_idx, round(rec.score, 12)) for rec in picks] == [(2, 0.6), (4, 0.1)]
    assert [rec.item_idx for rec in watch_next(hand_made, catalogue(), {0: 4.0, 1: 5.0}, k=1)] == [2]
    recent_only = watch_next(hand_made, catalogue(), {0: 4.0, 1: 5.0}, k=1, recent=1)
    assert [(r.item_idx, round(r.contribution, 12)) for r in recent_only[0].reasons] == [(1, 0.5)]


def test_an_empty_profile_gets_the_first_movies_people_watch(hand_made):
    picks = watch_next(hand_made, catalogue(), {}, k=2)
    assert [rec.item_idx for rec in picks] == [0, 1]
    assert np.allclose([rec.score for rec in picks], [0.4, 0.3])  # softmax of the biases: 4:3:1:1:1
    assert all(rec.reasons == [] for rec in picks)


def test_next_item_chances_sum_to_one_over_the_unrated(hand_made):
    chances = next_item_chances(hand_made, {0: 4.0, 1: 5.0})
    assert chances.dtype == np.float64 and chances.shape == (5,)
    assert np.allclose(chances, [0.0, 0.0, 0.6, 0.3, 0.1])
    assert np.allclose(next_item_chances(hand_made, {1: 5.0}, exclude=np.array([0, 1, 2])), [0, 0, 0, 0.75, 0.25])
    # Large scores do not overflow, and excluding everything gives zeros instead of NaN.
    huge = LastItemModel(TRANSITIONS, BIAS + 1000.0)
    assert np.allclose(next_item_chances(huge, {}), [0.4, 0.3, 0.1, 0.1, 0.1])
    assert next_item_chances(hand_made, {}, exclude=np.arange(5)).tolist() == [0.0] * 5


def test_bad_arguments_say_what_was_expected(hand_made):
    with pytest.raises(ValueError, match="needs a next-item model"):
        watch_next(NotSequential(TRANSITIONS, BIAS), catalogue(), {0: 4.0})
    with pytest.raises(ValueError, match="k must be a positive integer"):
        watch_next(hand_made, catalogue(), {0: 4.0}, k=0)
    with pytest.raises(ValueError, match="recent must be a positive integer"):
        watch_next(hand_made, catalogue(), {0: 4.0}, recent=0)
    with pytest.raises(ValueError, match="catalogue has 4 items but the model knows 5"):
        watch_next(hand_made, catalogue().iloc[:4], {0: 4.0})
    with pytest.raises(ValueError, match="not in this model's catalogue"):
        watch_next(hand_made, catalogue(), {7: 4.0})
    with pytest.raises(TypeError, match="RecommendationFilter"):
        watch_next(hand_made, catalogue(), {0: 4.0}, filters={"genres": ["Drama"]})


# --- trained sequence models -----------------------------------------------------------------
@pytest.fixture(scope="module")
def sequences():
    return generate_synthetic(n_users=80, n_items=40, n_interactions=1600, sequential=True, seed=3)


@pytest.fixture(scope="module")
def transformer(sequences):
    torch.set_num_threads(1)
    config = {"embedding_dim": 8, "n_heads": 1, "n_layers": 1, "max_length": 4, "epochs": 2, "batch_size": 64}
    return create_model("seq-transformer", device="cpu", **config).fit(sequences)


def test_chances_are_the_softmax_of_the_models_scores(transformer, sequences):
    history = {5: 4.0, 17: 3.0, 2: 5.0, 30: 2.0, 11: 4.5, 8: 1.0}
    picks = watch_next(transformer, sequences.catalogue, history, k=10)
    scores = transformer.score_folded(transformer.fold_in(history)).double()
    scores[list(history)] = -torch.inf
    expected = torch.softmax(scores, dim=0).numpy()
    order = np.argsort(-expected, kind="stable")[:10]
    assert [rec.item_idx for rec in picks] == order.tolist()
    assert np.allclose([rec.score for rec in picks], expected[order], rtol=1e-9, atol=1e-12)
    # The same top 10 as the model's own ranking of that ordered history.
    items, _ = transformer.recommend_for(list(history), k=10)
    assert [rec.item_idx for rec in picks] == items.tolist()


def test_reasons_are_leave_one_out_and_zero_outside_the_window(transformer, sequences):
    history = {5: 4.0, 17: 3.0, 2: 5.0, 30: 2.0, 11: 4.5, 8: 1.0}  # the model reads the last 4
    picks = watch_next(transformer, sequences.catalogue, history, k=3, recent=6)
    for rec in picks:
        by_item = {reason.item_idx: reason.contribution for reason in rec.reasons}
        assert set(by_item) == set(history)
        contributions = [reason.contribution for reason in rec.reasons]
        assert contributions == sorted(contributions, reverse=True)
        assert by_item[5] == 0.0  # leaving out the oldest does not change the last-4 window
        for left_out in (30, 8):  # brute force: re-score without it
            without = next_item_chances(transformer, {j: r for j, r in history.items() if j != left_out}, np.array(list(history)))
            assert by_item[left_out] == pytest.approx(rec.score - without[rec.item_idx], abs=1e-12)


def test_a_different_order_gives_a_different_list(transformer, sequences):
    history = {5: 4.0, 17: 3.0, 2: 5.0, 30: 2.0}
    forward = watch_next(transformer, sequences.catalogue, history, k=10)
    backward = watch_next(transformer, sequences.catalogue, dict(reversed(history.items())), k=10)
    assert [rec.score for rec in forward] != pytest.approx([rec.score for rec in backward])
