"""Implicit ALS: the solvers against brute force, the objective, fold-in, explanations, persistence."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from recengine.data.dataset import Dataset, IdMap
from recengine.data.synthetic import generate_synthetic
from recengine.models.als import (
    ALSConfig,
    AlternatingLeastSquares,
    _build_sides,
    confidence_weights,
    objective,
    solve_cg,
    solve_cholesky,
)
from recengine.models.base import NotFittedError, Recommender, TrainingError, create_model

from conftest import require_release


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread per test, restored afterwards: on a shared machine every multi-threaded
    sparse product can wait a whole scheduler slice for its second thread, which makes tiny fits
    take seconds. Results do not depend on the thread count beyond float rounding."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TINY = ALSConfig(factors=6, iterations=8, regularization=0.5, alpha=2.0, confidence="linear", seed=3)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data() -> Dataset:
    """40 users x 30 items x 400 ratings with cluster structure (ratings 0.5..5)."""
    return generate_synthetic(40, 30, 400, seed=1)


@pytest.fixture(scope="module")
def model(data) -> AlternatingLeastSquares:
    return AlternatingLeastSquares(replace(TINY, solver="cholesky"), device="cpu").fit(data)


def dense_problem(data: Dataset, config: ALSConfig) -> tuple[np.ndarray, np.ndarray]:
    """The full (n_users, n_items) float64 confidence C and preference P matrices, built naively."""
    confidence = np.ones((data.n_users, data.n_items))
    preference = np.zeros((data.n_users, data.n_items))
    for user, item, rating in zip(data.users.tolist(), data.items.tolist(), data.ratings.tolist()):
        if rating >= config.min_rating:
            confidence[user, item] += confidence_weights(np.array([rating]), config)[0] - 1.0
            preference[user, item] = 1.0
    return confidence, preference


def brute_force_rows(confidence: np.ndarray, preference: np.ndarray, fixed: np.ndarray, regularization: float) -> np.ndarray:
    """Every row's least-squares solution, one numpy solve per row: (Yᵀ C_u Y + λI)⁻¹ Yᵀ C_u p_u."""
    d = fixed.shape[1]
    rows = []
    for c_u, p_u in zip(confidence, preference):
        system = fixed.T @ (c_u[:, None] * fixed) + regularization * np.eye(d)
        rows.append(np.linalg.solve(system, fixed.T @ (c_u * p_u)))
    return np.array(rows)


def dense_objective(confidence, preference, x, y, regularization) -> float:
    scores = x.astype(np.float64) @ y.astype(np.float64).T
    penalty = regularization * ((x.astype(np.float64) ** 2).sum() + (y.astype(np.float64) ** 2).sum())
    return float((confidence * (preference - scores) ** 2).sum() + penalty)


# --- configuration ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "field, value, message",
    [
        ("factors", 0, "factors must be a positive integer, got 0"),
        ("iterations", 2.5, "iterations must be a positive integer"),
        ("cg_steps", True, "cg_steps must be a positive integer"),
        ("regularization", 0.0, "regularization must be a finite number > 0"),
        ("alpha", -1.0, "alpha must be a finite number >= 0"),
        ("alpha", float("nan"), "alpha must be a finite number >= 0"),
        ("epsilon", 0.0, "epsilon must be a finite number > 0"),
        ("min_rating", -0.5, "min_rating must be a finite number >= 0"),
        ("init_std", float("inf"), "init_std must be a finite number > 0"),
        ("valid_users", -1, "valid_users must be an integer >= 0"),
        ("seed", -3, "seed must be an integer >= 0"),
        ("confidence", "square", r"confidence must be one of \('linear', 'log'\), got 'square'"),
        ("solver", "lu", r"solver must be one of \('cg', 'cholesky'\), got 'lu'"),
    ],
)
def test_config_rejects_bad_values_and_says_what_is_allowed(field: str, value, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ALSConfig(**{field: value})


def test_config_from_the_command_line_strings() -> None:
    model = create_model("als", factors="8", alpha="2.5", solver="cholesky", confidence="log")
    assert isinstance(model, AlternatingLeastSquares)
    assert model.config == ALSConfig(factors=8, alpha=2.5, solver="cholesky", confidence="log")
    assert model.explicit is False


def test_confidence_weights_by_hand() -> None:
    ratings = np.array([0.5, 1.0, 4.0])
    np.testing.assert_allclose(confidence_weights(ratings, ALSConfig(alpha=2.0, confidence="linear")), [2.0, 3.0, 9.0])
    log = ALSConfig(alpha=2.0, confidence="log", epsilon=0.5)
    np.testing.assert_allclose(confidence_weights(ratings, log), 1.0 + 2.0 * np.log([2.0, 3.0, 9.0]))


# --- solvers ----------------------------------------------------------------------------------
def test_cholesky_matches_a_numpy_solve_per_user(data) -> None:
    config = replace(TINY, confidence="log", min_rating=2.0)
    users, items = _build_sides(data, config, CPU)
    fixed = torch.randn(data.n_items, config.factors, generator=torch.Generator().manual_seed(0))
    confidence, preference = dense_problem(data, config)
    expected = brute_force_rows(confidence, preference, fixed.double().numpy(), config.regularization)
    solved = solve_cholesky(users, fixed, config.regularization)
    assert solved.dtype == torch.float32 and solved.shape == (data.n_users, config.factors)
    np.testing.assert_allclose(solved.numpy(), expected, rtol=1e-5, atol=1e-6)
    # the item side solves the transposed problem
    fixed_users = torch.randn(data.n_users, config.factors, generator=torch.Generator().manual_seed(1))
    expected_items = brute_force_rows(confidence.T, preference.T, fixed_users.double().numpy(), config.regularization)
    solved_items = solve_cholesky(items, fixed_users, config.regularization)
    np.testing.assert_allclose(solved_items.numpy(), expected_items, rtol=1e-5, atol=1e-6)


def test_cholesky_chunks_give_the_same_answer(data, monkeypatch) -> None:
    users, _ = _build_sides(data, TINY, CPU)
    fixed = torch.randn(data.n_items, TINY.factors, generator=torch.Generator().manual_seed(0))
    whole = solve_cholesky(users, fixed, 0.5)
    monkeypatch.setattr("recengine.models.als._CHOLESKY_CHUNK_BYTES", 8 * TINY.factors * 20)  # a handful of rows a chunk
    torch.testing.assert_close(solve_cholesky(users, fixed, 0.5), whole, rtol=1e-6, atol=1e-7)


def test_conjugate_gradients_converge_to_the_cholesky_solution(data) -> None:
    users, _ = _build_sides(data, TINY, CPU)
    fixed = torch.randn(data.n_items, TINY.factors, generator=torch.Generator().manual_seed(0))
    exact = solve_cholesky(users, fixed, TINY.regularization)
    start = torch.zeros_like(exact)

    def error(solution: torch.Tensor) -> float:
        return float((solution - exact).norm() / exact.norm())

    errors = [error(solve_cg(users, fixed, start, TINY.regularization, steps)) for steps in (1, 3, TINY.factors)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-4  # d steps solve a d x d system (up to float32 rounding)
    # warm-started a little off the answer, three steps land very close to it
    nearby = exact + 0.1 * torch.randn(exact.shape, generator=torch.Generator().manual_seed(2))
    assert error(solve_cg(users, fixed, nearby, TINY.regularization, 3)) < 0.1 * error(nearby)
    # started at the answer, nothing moves
    torch.testing.assert_close(solve_cg(users, fixed, exact, TINY.regularization, 3), exact, rtol=0, atol=1e-5)


def test_a_row_without_positives_gets_zero_factors() -> None:
    ids = IdMap(np.arange(3))
    data = Dataset.from_arrays("gap", [0, 0, 2], [0, 1, 2], [4.0, 5.0, 3.0], user_map=ids, item_map=ids)  # user 1: none
    users, _ = _build_sides(data, TINY, CPU)
    fixed = torch.randn(3, TINY.factors, generator=torch.Generator().manual_seed(0))
    for solved in (solve_cholesky(users, fixed, 1.0), solve_cg(users, fixed, torch.ones(3, TINY.factors), 1.0, TINY.factors)):
        assert torch.count_nonzero(solved[0]) > 0
        torch.testing.assert_close(solved[1], torch.zeros(TINY.factors), rtol=0, atol=1e-5)


# --- training ---------------------------------------------------------------------------------
def test_objective_matches_a_dense_computation(data) -> None:
    users, _ = _build_sides(data, TINY, CPU)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(data.n_users, TINY.factors, generator=generator)
    y = torch.randn(data.n_items, TINY.factors, generator=generator)
    confidence, preference = dense_problem(data, TINY)
    total, weight = objective(users, x, y, TINY.regularization)
    assert total == pytest.approx(dense_objective(confidence, preference, x.numpy(), y.numpy(), TINY.regularization), rel=1e-6)
    assert weight == pytest.approx(confidence.sum(), rel=1e-9)


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_objective_decreases_every_iteration(data, solver: str) -> None:
    events = []
    model = AlternatingLeastSquares(replace(TINY, solver=solver, iterations=10), device="cpu").fit(data, on_epoch=events.append)
    losses = np.array([event.loss for event in events])
    assert [event.epoch for event in events] == list(range(1, 11)) and all(event.epochs == 10 for event in events)
    assert np.all(np.diff(losses) <= 1e-7 * losses[:-1]), losses
    assert losses[-1] < 0.9 * losses[0]
    # the reported loss is the objective over the total confidence weight
    confidence, preference = dense_problem(data, model.config)
    x, y = model.user_factors(), model.item_factors()
    expected = dense_objective(confidence, preference, x, y, TINY.regularization) / confidence.sum()
    assert losses[-1] == pytest.approx(expected, rel=1e-5)


def test_cg_training_reaches_the_cholesky_objective(data) -> None:
    """Three warm-started CG steps per half-step track exact ALS closely (0.1 % here after 12)."""
    cg = AlternatingLeastSquares(replace(TINY, solver="cg", iterations=12), device="cpu").fit(data)
    exact = AlternatingLeastSquares(replace(TINY, solver="cholesky", iterations=12), device="cpu").fit(data)
    assert cg.history[-1].loss == pytest.approx(exact.history[-1].loss, rel=3e-3)


def test_fit_is_reproducible_for_a_seed(data) -> None:
    first = AlternatingLeastSquares(TINY, device="cpu").fit(data)
    again = AlternatingLeastSquares(TINY, device="cpu").fit(data)
    other = AlternatingLeastSquares(replace(TINY, seed=4), device="cpu").fit(data)
    np.testing.assert_array_equal(first.item_factors(), again.item_factors())
    assert not np.allclose(first.item_factors(), other.item_factors())


def test_ratings_below_min_rating_count_as_unobserved(data) -> None:
    config = replace(TINY, min_rating=3.0)
    kept = data.subset(data.ratings >= 3.0, "kept")
    with_threshold = AlternatingLeastSquares(config, device="cpu").fit(data)
    without_rows = AlternatingLeastSquares(config, device="cpu").fit(kept)
    np.testing.assert_allclose(with_threshold.item_factors(), without_rows.item_factors(), rtol=1e-5, atol=1e-6)


def test_repeated_interactions_add_their_confidence() -> None:
    ids = IdMap(np.arange(4))
    # user 0 rated item 1 twice (2 and 3): with linear confidence that is one rating of 5
    twice = Dataset.from_arrays(
        "twice", [0, 0, 0, 1, 2, 3, 3], [0, 1, 1, 2, 3, 0, 2], [4.0, 2.0, 3.0, 5.0, 1.0, 4.0, 2.0], user_map=ids, item_map=ids
    )
    once = Dataset.from_arrays(
        "once", [0, 0, 1, 2, 3, 3], [0, 1, 2, 3, 0, 2], [4.0, 5.0, 5.0, 1.0, 4.0, 2.0], user_map=ids, item_map=ids
    )
    config = replace(TINY, factors=2, solver="cholesky")
    a = AlternatingLeastSquares(config, device="cpu").fit(twice)
    b = AlternatingLeastSquares(config, device="cpu").fit(once)
    np.testing.assert_allclose(a.item_factors(), b.item_factors(), rtol=1e-5, atol=1e-6)


def test_validation_metrics_are_reported_per_iteration(data) -> None:
    train, valid = data.subset(np.arange(len(data)) % 5 != 0, "train"), data.subset(np.arange(len(data)) % 5 == 0, "valid")
    events = []
    AlternatingLeastSquares(replace(TINY, iterations=3, valid_users=10), device="cpu").fit(train, valid, on_epoch=events.append)
    assert len(events) == 3
    for event in events:
        assert set(event.metrics) == {"precision@10", "ndcg@10"}
        assert 0.0 <= event.metrics["precision@10"] <= 1.0 and 0.0 <= event.metrics["ndcg@10"] <= 1.0


def test_learns_the_cluster_structure() -> None:
    """On held-out interactions ALS ranks far better than chance and than item popularity alone."""
    big = generate_synthetic(200, 120, 4000, popularity_exponent=0.0, seed=2)
    test = np.random.default_rng(0).random(len(big)) < 0.2
    train, held_out = big.subset(~test, "train"), big.subset(test, "test")
    from recengine.evaluation import ranking_metrics

    config = ALSConfig(factors=16, iterations=10, regularization=5.0, alpha=1.0)
    model = AlternatingLeastSquares(config, device="cpu").fit(train)
    ours = ranking_metrics(model.score_users, train, held_out, metrics=["ndcg"])["ndcg@10"]
    popularity = torch.from_numpy(train.item_popularity().astype(np.float32))
    baseline = ranking_metrics(lambda users: popularity.expand(len(users), -1), train, held_out, metrics=["ndcg"])["ndcg@10"]
    assert ours > 1.2 * baseline


def test_nan_objective_is_a_training_error(data, monkeypatch) -> None:
    def diverging(side, fixed, current, *rest):
        return torch.full_like(current, float("nan"))

    monkeypatch.setattr("recengine.models.als.solve_cg", diverging)
    with pytest.raises(TrainingError, match="diverged"):
        AlternatingLeastSquares(TINY, device="cpu").fit(data)


# --- scoring ----------------------------------------------------------------------------------
def test_predict_and_score_users_agree(model) -> None:
    users, items = np.array([0, 3, 39, 3]), np.array([1, 29, 0, 1])
    scores = model.score_users(users)
    assert scores.shape == (4, 30) and scores.dtype == torch.float32
    predicted = model.predict(users, items)
    assert predicted.dtype == np.float32
    np.testing.assert_allclose(predicted, scores.numpy()[np.arange(4), items], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(predicted, (model.user_factors()[users] * model.item_factors()[items]).sum(1), rtol=1e-6)
    with pytest.raises(IndexError, match="user indices"):
        model.score_users(np.array([40]))
    with pytest.raises(ValueError, match="same length"):
        model.predict(np.array([0, 1]), np.array([0]))


def test_unfitted_model_says_so() -> None:
    with pytest.raises(NotFittedError, match="call fit"):
        AlternatingLeastSquares(TINY).fold_in({0: 4.0})


# --- new users --------------------------------------------------------------------------------
def test_fold_in_of_a_training_user_reproduces_its_factors(data, model) -> None:
    """The last half-step of training solves the users against the final item factors, which is
    exactly fold-in's system: with the Cholesky solver the answers agree to float32 rounding."""
    indptr, items, ratings = data.user_item_csr()
    for user in (0, 7, 39):
        mine = dict(zip(items[indptr[user] : indptr[user + 1]].tolist(), ratings[indptr[user] : indptr[user + 1]].tolist()))
        np.testing.assert_allclose(model.fold_in(mine), model.user_factors()[user], rtol=1e-4, atol=1e-5)


def test_fold_in_matches_trained_factors_within_cg_tolerance(data) -> None:
    cg = AlternatingLeastSquares(replace(TINY, solver="cg", cg_steps=3, iterations=12), device="cpu").fit(data)
    indptr, items, ratings = data.user_item_csr()
    gaps = []
    for user in range(data.n_users):
        mine = dict(zip(items[indptr[user] : indptr[user + 1]].tolist(), ratings[indptr[user] : indptr[user + 1]].tolist()))
        trained = cg.user_factors()[user]
        gaps.append(np.linalg.norm(cg.fold_in(mine) - trained) / np.linalg.norm(trained))
    assert max(gaps) < 0.01  # about 0.3 % here


def test_fold_in_solves_the_users_own_system(model) -> None:
    ratings = {2: 5.0, 11: 3.5, 20: 1.0}
    y = model.item_factors().astype(np.float64)
    confidence = np.ones(model.n_items)
    preference = np.zeros(model.n_items)
    for item, rating in ratings.items():
        confidence[item] = 1.0 + model.config.alpha * rating
        preference[item] = 1.0
    expected = brute_force_rows(confidence[None], preference[None], y, model.config.regularization)[0]
    folded = model.fold_in(ratings)
    assert folded.dtype == np.float32 and folded.shape == (model.config.factors,)
    np.testing.assert_allclose(folded, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.user_vector(folded), folded)
    np.testing.assert_allclose(model.score_folded(folded).numpy(), y @ expected, rtol=1e-4, atol=1e-5)
    assert not model.fold_in({}).any()
    with pytest.raises(ValueError, match="pass the result of fold_in"):
        model.score_folded(np.zeros(3))


def test_explain_splits_the_score_exactly(data) -> None:
    config = replace(TINY, min_rating=2.0)
    strict = AlternatingLeastSquares(config, device="cpu").fit(data)
    ratings = {2: 5.0, 11: 3.5, 20: 1.5, 25: 4.0}
    y = strict.item_factors().astype(np.float64)
    positives = [2, 11, 25]  # item 20 is below min_rating
    confidence = 1.0 + config.alpha * np.array([ratings[j] for j in positives])
    rated = y[positives]
    system = y.T @ y + config.regularization * np.eye(config.factors) + (rated * (confidence - 1)[:, None]).T @ rated
    x = np.linalg.solve(system, y[positives].T @ confidence)
    for item in (0, 2, 17):
        parts = strict.explain(ratings, item)
        assert sorted(j for j, _ in parts) == sorted(ratings)
        assert [c for _, c in parts] == sorted((c for _, c in parts), reverse=True)
        contribution = dict(parts)
        assert contribution[20] == 0.0
        weights = np.linalg.solve(system, y[item])
        for j, c_j in zip(positives, confidence):
            assert contribution[j] == pytest.approx(c_j * y[j] @ weights, rel=1e-9)
        assert sum(contribution.values()) == pytest.approx(float(y[item] @ x), rel=1e-9, abs=1e-12)
        folded_score = float(strict.score_folded(strict.fold_in(ratings))[item])
        assert sum(contribution.values()) == pytest.approx(folded_score, rel=1e-4, abs=1e-6)
    assert strict.explain({}, 0) == []
    with pytest.raises(IndexError):
        strict.explain(ratings, 30)


def test_explain_many_equals_explain_item_by_item_exactly(data) -> None:
    strict = AlternatingLeastSquares(replace(TINY, min_rating=2.0), device="cpu").fit(data)
    ratings = {2: 5.0, 11: 3.5, 20: 1.5, 25: 4.0}
    wanted = np.array([17, 0, 2, 17, 29, 5])  # any order, repeats allowed
    many = strict.explain_many(ratings, wanted)
    assert many == [strict.explain(ratings, int(item)) for item in wanted]
    assert many[0] == many[3]
    assert strict.explain_many(ratings, np.array([], dtype=np.int64)) == []
    assert strict.explain_many({}, np.array([1, 2])) == [[], []]
    with pytest.raises(IndexError):
        strict.explain_many(ratings, np.array([0, 30]))
    with pytest.raises(TypeError, match="integer item indices"):
        strict.explain_many(ratings, np.array([0.5]))


def test_explain_many_shares_the_generic_default_answers(data) -> None:
    """The override agrees with the base class's one-`explain`-per-item default (with more
    factors than a SIMD register holds, where a changed summation order would show)."""
    strict = AlternatingLeastSquares(replace(TINY, factors=24, iterations=3), device="cpu").fit(data)
    ratings = {4: 4.5, 9: 2.0, 13: 5.0}
    wanted = np.arange(strict.n_items)
    assert strict.explain_many(ratings, wanted) == Recommender.explain_many(strict, ratings, wanted)


def test_host_item_cache_follows_the_factors(data, tmp_path) -> None:
    """Y and YᵀY + λI are computed once per set of item factors and never go stale after a
    refit, a load or an in-place change of the factors."""
    model = AlternatingLeastSquares(TINY, device="cpu").fit(data)
    ratings = {2: 5.0, 11: 3.5}
    folded = model.fold_in(ratings)
    y, gram = model._host_items()
    assert model._host_items()[1] is gram  # cached
    np.testing.assert_allclose(gram, y.T @ y + TINY.regularization * np.eye(TINY.factors), rtol=1e-12)

    model.fit(generate_synthetic(40, 30, 600, seed=11))  # other data: other factors
    y_refit = model.item_factors().astype(np.float64)
    assert model._host_items()[1] is not gram
    np.testing.assert_array_equal(model._host_items()[0], y_refit)
    assert not np.array_equal(model.fold_in(ratings), folded)

    loaded = Recommender.load(AlternatingLeastSquares(TINY, device="cpu").fit(data).save(tmp_path / "als"), device="cpu")
    np.testing.assert_array_equal(loaded.fold_in(ratings), folded)

    with torch.no_grad():
        loaded._item_factors.mul_(2.0)  # in place: same tensor, new version
    np.testing.assert_array_equal(loaded._host_items()[0], loaded.item_factors().astype(np.float64))


# --- persistence and devices ------------------------------------------------------------------
def test_save_load_round_trip_is_exact(model, tmp_path) -> None:
    loaded = Recommender.load(model.save(tmp_path / "als"), device="cpu")
    assert isinstance(loaded, AlternatingLeastSquares) and loaded.config == model.config
    torch.testing.assert_close(loaded.score_users(np.arange(40)), model.score_users(np.arange(40)), rtol=0, atol=0)
    ratings = {2: 5.0, 11: 3.5}
    np.testing.assert_array_equal(loaded.fold_in(ratings), model.fold_in(ratings))
    assert loaded.explain(ratings, 5) == model.explain(ratings, 5)
    np.testing.assert_array_equal(loaded.similar_items(3, 5)[0], model.similar_items(3, 5)[0])


def test_load_refuses_weights_of_another_shape(model, tmp_path) -> None:
    other = AlternatingLeastSquares(replace(TINY, factors=4), device="cpu")
    with pytest.raises(ValueError, match="factors=4"):
        other._restore({"user_factors": model._user_factors, "item_factors": model._item_factors})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("solver", ["cg", "cholesky"])
def test_cpu_and_cuda_train_alike(data, solver: str) -> None:
    config = replace(TINY, solver=solver)
    on_cpu = AlternatingLeastSquares(config, device="cpu").fit(data)
    on_gpu = AlternatingLeastSquares(config, device="cuda").fit(data)
    assert on_gpu.score_users(np.array([0])).device.type == "cuda"
    np.testing.assert_allclose(on_gpu.item_factors(), on_cpu.item_factors(), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose([e.loss for e in on_gpu.history], [e.loss for e in on_cpu.history], rtol=1e-4)


# --- real data --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def movielens_small():
    require_release("ml-latest-small")
    from recengine.data.movielens import load_dataset

    return load_dataset("ml-latest-small")


@pytest.mark.slow
def test_because_you_watched_forrest_gump(movielens_small) -> None:
    model = AlternatingLeastSquares(device="cpu").fit(movielens_small)
    titles = movielens_small.catalogue["title"]
    forrest = int(np.flatnonzero(titles == "Forrest Gump (1994)")[0])
    similar, _ = model.similar_items(forrest, 10)
    found = set(titles.to_numpy()[similar].tolist())
    classics = {
        "Shawshank Redemption, The (1994)", "Silence of the Lambs, The (1991)", "Pulp Fiction (1994)",
        "Braveheart (1995)", "Schindler's List (1993)", "Jurassic Park (1993)", "Matrix, The (1999)",
        "Apollo 13 (1995)", "Seven (a.k.a. Se7en) (1995)",
    }
    assert len(found & classics) >= 5, sorted(found)


@pytest.mark.slow
def test_ranking_accuracy_on_ml_latest_small(movielens_small) -> None:
    """Floors a little under the figures of benchmarks/als_vs_implicit.py (which also runs implicit)."""
    from recengine.data.splits import make_split
    from recengine.evaluation import ranking_metrics

    split = make_split(movielens_small, "random", 42)
    model = AlternatingLeastSquares(device="cpu").fit(split.train)
    metrics = ranking_metrics(model.score_users, split.train, split.test, metrics=["precision", "map", "ndcg"])
    assert metrics["precision@10"] >= 0.26 and metrics["map@10"] >= 0.18 and metrics["ndcg@10"] >= 0.31, metrics
