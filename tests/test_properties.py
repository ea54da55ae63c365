"""Property-based tests (hypothesis) for the search, the MovieLens loaders, the splits and MF fold-in.

What is already covered elsewhere is not repeated: the split partition on any small dataset
(tests/test_splits.py), the ranking metrics against brute force (tests/test_evaluation.py),
and sorted, clean search results for any short text (tests/test_search.py). Here:

- search: any text (any code point, up to 300 characters) never raises and gives valid,
  distinct item indices; every catalogue title searched as written comes first and exact;
  case, spacing and punctuation do not change what is found;
- loaders: random ratings written in the ml-100k and ml-latest-small formats load back as the
  same ratings (checked against a plain line-by-line reference parser), titles included;
- splits: the same seed gives the same split, by-user splits never share a user;
- fold-in (MF): any small valid ratings dict gives a finite vector and predictions inside the
  model's range, independent of the dict's order;
- hyper-parameters: any text for any MF field gives a config or one short ValueError (never
  another exception, never a value past the field's bound); any whole number written as text
  parses exactly (no float rounding).
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recengine.data.dataset import Dataset, IdMap
from recengine.data.movielens import load_movielens
from recengine.data.splits import split_by_user, split_random
from recengine.models.base import MAX_EMBEDDING_DIM, MAX_EPOCHS, config_from_dict
from recengine.models.mf import MatrixFactorization, MFConfig
from recengine.search import TitleSearch, normalize_title

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# --- search -----------------------------------------------------------------------------------------------
WORDS = ["matrix", "star", "wars", "heat", "casino", "amélie", "toy", "story", "alien", "fargo", "brazil", "ran", "up", "se7en", "godfather"]


@st.composite
def catalogues(draw) -> list[str]:
    """3-12 distinct MovieLens-style titles made of a few known words and a year."""
    names = draw(
        st.lists(st.lists(st.sampled_from(WORDS), min_size=1, max_size=3).map(" ".join), min_size=3, max_size=12, unique_by=normalize_title)
    )
    years = draw(st.lists(st.integers(1920, 2020), min_size=len(names), max_size=len(names)))
    return [f"{name.title()} ({year})" for name, year in zip(names, years)]


def search_over(titles: list[str]) -> TitleSearch:
    return TitleSearch(pd.DataFrame({"title": titles, "popularity": np.arange(len(titles))[::-1]}))


@FAST
@given(titles=catalogues(), query=st.text(alphabet=st.characters(), max_size=300))
def test_search_never_raises_and_gives_valid_distinct_items(titles, query):
    search = search_over(titles)
    found = search.search(query, limit=5)
    items = [match.item_idx for match in found]
    assert len(items) == len(set(items)) <= 5
    assert all(0 <= item < len(titles) and 0.0 <= match.score <= 100.0 for item, match in zip(items, found))
    match, candidates, ambiguous = search.resolve(query)
    assert match is None or match.item_idx in {c.item_idx for c in candidates}


@FAST
@given(titles=catalogues(), data=st.data())
def test_an_exact_title_is_found_first(titles, data):
    search = search_over(titles)
    item = data.draw(st.integers(0, len(titles) - 1))
    top = search.search(titles[item], limit=3)[0]
    assert (top.item_idx, top.exact, top.score) == (item, True, 100.0)
    match, _, ambiguous = search.resolve(titles[item])
    assert match.item_idx == item and not ambiguous


@FAST
@given(titles=catalogues(), data=st.data())
def test_case_spacing_and_punctuation_do_not_matter(titles, data):
    search = search_over(titles)
    item = data.draw(st.integers(0, len(titles) - 1))
    name = titles[item].rsplit(" (", 1)[0]
    punct = data.draw(st.sampled_from(["!", "?", ".", ",", ":", "-", "  ", "...", " - "]))
    variants = [name.upper(), name.lower(), f"  {name.swapcase()}  ", name.replace(" ", punct) + punct, f"the {name}"]
    expected = search.search(name, limit=1)[0].item_idx
    for variant in variants:
        assert search.search(variant, limit=1)[0].item_idx == expected, variant


# --- loaders --------------------------------------------------------------------------------------------------
title_text = st.text(
    alphabet=st.characters(codec="latin-1", exclude_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=30
).filter(lambda text: text.strip() == text and "|" not in text)


@st.composite
def rating_tables(draw, half_stars: bool) -> pd.DataFrame:
    """Distinct (user, item) pairs with raw ids (not contiguous), ratings on the scale, timestamps."""
    pairs = draw(st.lists(st.tuples(st.integers(1, 2_000), st.integers(1, 200_000)), min_size=1, max_size=40, unique=True))
    steps = st.integers(1, 10).map(lambda n: n / 2) if half_stars else st.integers(1, 5).map(float)
    ratings = draw(st.lists(steps, min_size=len(pairs), max_size=len(pairs)))
    stamps = draw(st.lists(st.integers(0, 2**40), min_size=len(pairs), max_size=len(pairs)))
    return pd.DataFrame({"user": [u for u, _ in pairs], "item": [i for _, i in pairs], "rating": ratings, "timestamp": stamps})


def reference_ratings_100k(path: Path) -> list[tuple[int, int, float, int]]:
    """u.data by hand: tab-separated user, item, rating, timestamp per line."""
    rows = []
    for line in path.read_text().splitlines():
        user, item, rating, stamp = line.split("\t")
        rows.append((int(user), int(item), float(rating), int(stamp)))
    return sorted(rows)


def reference_ratings_csv(path: Path) -> list[tuple[int, int, float, int]]:
    """ratings.csv by hand, with the csv module."""
    with open(path, newline="", encoding="utf-8") as handle:
        return sorted((int(r["userId"]), int(r["movieId"]), float(r["rating"]), int(r["timestamp"])) for r in csv.DictReader(handle))


def loaded_ratings(data: Dataset) -> list[tuple[int, int, float, int]]:
    users, items = data.user_map.ids[data.users], data.item_map.ids[data.items]
    return sorted(zip(users.tolist(), items.tolist(), data.ratings.astype(float).tolist(), data.timestamps.tolist()))


def titles_by_id(data: Dataset) -> dict[int, str]:
    return dict(zip(data.catalogue["item_id"].tolist(), data.catalogue["title"].tolist()))


@FAST
@given(table=rating_tables(half_stars=False), data=st.data())
def test_ml100k_format_round_trip(tmp_path_factory, table, data):
    folder = tmp_path_factory.mktemp("ml-100k")
    table[["user", "item", "rating", "timestamp"]].astype({"rating": int}).to_csv(folder / "u.data", sep="\t", header=False, index=False)
    items = sorted(set(table["item"]))
    titles = data.draw(st.lists(title_text, min_size=len(items), max_size=len(items)))
    lines = [f"{item}|{title} (1995)|01-Jan-1995||http://x|" + "|".join(["0"] * 19) for item, title in zip(items, titles)]
    (folder / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))

    loaded = load_movielens(folder, "ml-100k")
    assert loaded_ratings(loaded) == reference_ratings_100k(folder / "u.data")
    assert titles_by_id(loaded) == {item: f"{title} (1995)" for item, title in zip(items, titles)}
    assert loaded.user_map.ids.tolist() == sorted(set(table["user"])) and loaded.item_map.ids.tolist() == items


@FAST
@given(table=rating_tables(half_stars=True), data=st.data())
def test_ml_latest_small_format_round_trip(tmp_path_factory, table, data):
    folder = tmp_path_factory.mktemp("ml-latest-small")
    frame = table.rename(columns={"user": "userId", "item": "movieId"})
    frame.to_csv(folder / "ratings.csv", index=False)
    items = sorted(set(table["item"]))
    any_text = st.text(alphabet=st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=30)
    titles = data.draw(st.lists(any_text.filter(lambda t: t.strip() == t and not re.search(r"\(\d{4}\)$", t)), min_size=len(items), max_size=len(items)))
    movies = io.StringIO()
    writer = csv.writer(movies, lineterminator="\n")  # quotes titles with commas or quotes, as MovieLens does
    writer.writerow(["movieId", "title", "genres"])
    writer.writerows((item, f"{title} (2001)", "Comedy|Drama") for item, title in zip(items, titles))
    (folder / "movies.csv").write_text(movies.getvalue(), encoding="utf-8")

    loaded = load_movielens(folder, "ml-latest-small")
    assert loaded_ratings(loaded) == reference_ratings_csv(folder / "ratings.csv")
    assert titles_by_id(loaded) == {item: f"{title} (2001)" for item, title in zip(items, titles)}
    assert set(loaded.catalogue["genres"]) == {("Comedy", "Drama")}


# --- splits ----------------------------------------------------------------------------------------------------
def small_dataset(users: list[int], items: list[int]) -> Dataset:
    n = len(users)
    return Dataset.from_arrays(
        "prop", np.array(users), np.array(items), np.arange(n, dtype=np.float32) % 5 + 1, np.arange(n, dtype=np.int64),
        user_map=IdMap(np.arange(8)), item_map=IdMap(np.arange(9)), rating_scale=(1.0, 5.0),
    )  # fmt: skip


small_pairs = st.lists(st.tuples(st.integers(0, 7), st.integers(0, 8)), min_size=2, max_size=60, unique=True)


@FAST
@given(pairs=small_pairs, seed=st.integers(0, 2**63 - 1), fraction=st.floats(0.05, 0.95))
def test_splits_are_deterministic_per_seed_and_by_user_splits_share_no_user(pairs, seed, fraction):
    dataset = small_dataset([u for u, _ in pairs], [i for _, i in pairs])
    for make in (split_random, split_by_user):
        first, second = make(dataset, fraction, seed), make(dataset, fraction, seed)
        assert first.train.ratings.tolist() == second.train.ratings.tolist()
        assert first.test.timestamps.tolist() == second.test.timestamps.tolist()  # timestamps are row numbers
    by_user = split_by_user(dataset, fraction, seed)
    assert not set(by_user.train.users.tolist()) & set(by_user.test.users.tolist())
    rows = sorted(by_user.train.timestamps.tolist() + by_user.test.timestamps.tolist())
    assert rows == list(range(len(pairs)))


# --- fold-in ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_mf() -> MatrixFactorization:
    rng = np.random.default_rng(3)
    pairs = rng.choice(30 * 20, size=300, replace=False)
    data = Dataset.from_arrays(
        "tiny", pairs // 20, pairs % 20, rng.integers(1, 11, size=300).astype(np.float32) / 2,
        user_map=IdMap(np.arange(30)), item_map=IdMap(np.arange(20)), rating_scale=(0.5, 5.0),
    )  # fmt: skip
    return MatrixFactorization(MFConfig(epochs=3, embedding_dim=4, batch_size=64), device="cpu").fit(data)


half_star_ratings = st.dictionaries(st.integers(0, 19), st.integers(1, 10).map(lambda n: n / 2), min_size=0, max_size=20)


@FAST
@given(ratings=half_star_ratings, reverse_seed=st.integers(0, 2**32 - 1))
def test_mf_fold_in_is_finite_in_range_and_order_free(tiny_mf, ratings, reverse_seed):
    vector = tiny_mf.fold_in(ratings)
    assert vector.shape == (tiny_mf.config.embedding_dim + 1,) and np.isfinite(vector).all()
    scores = tiny_mf.score_folded(vector).numpy()
    low, high = tiny_mf.rating_scale
    margin = tiny_mf.config.range_margin
    assert scores.shape == (20,) and np.isfinite(scores).all()
    assert ((scores >= low - margin) & (scores <= high + margin)).all()

    shuffled = list(ratings.items())
    np.random.default_rng(reverse_seed).shuffle(shuffled)
    np.testing.assert_allclose(tiny_mf.fold_in(dict(shuffled)), vector, rtol=1e-5, atol=1e-6)
    items, _ = tiny_mf.recommend_for(ratings, k=5)
    assert not set(items.tolist()) & set(ratings) and len(items) == min(5, 20 - len(ratings))


# --- hyper-parameters ---------------------------------------------------------------------------------------
MF_FIELDS = sorted(MFConfig.__dataclass_fields__)


@FAST
@given(field=st.sampled_from(MF_FIELDS), text=st.one_of(st.text(max_size=40), st.integers().map(str), st.floats().map(str)))
def test_any_text_for_any_field_is_a_config_or_one_short_value_error(field, text):
    try:
        config = config_from_dict(MFConfig, {field: text})
    except ValueError as error:
        message = str(error)
        assert field in message and len(message) < 300 and not set(message) & {"\x00", "\x1b", "\r"}
        return
    assert 1 <= config.embedding_dim <= MAX_EMBEDDING_DIM and 1 <= config.epochs <= MAX_EPOCHS


@FAST
@given(value=st.integers(-(2**80), 2**80))
def test_whole_numbers_as_text_parse_exactly(value):
    try:
        config = config_from_dict(MFConfig, {"seed": str(value)})
    except ValueError as error:
        assert not 0 <= value < 2**63 and "seed must be an integer from 0 to" in str(error)
        return
    assert config.seed == value
