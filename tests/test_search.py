"""Fuzzy title search: normalisation, ranking tiers, years, popularity, hostile input, real titles."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import require_release
from recengine.data.dataset import display_title
from recengine.search import MAX_QUERY_CHARS, TitleMatch, TitleSearch, normalize_title


def catalogue(titles: list[str], popularity: list[int] | None = None) -> pd.DataFrame:
    """A catalogue frame as `Dataset.catalogue` has it (title, display_title, popularity)."""
    return pd.DataFrame(
        {
            "title": titles,
            "display_title": [display_title(t) for t in titles],
            "popularity": popularity if popularity is not None else [1] * len(titles),
        }
    )


MOVIES = catalogue(
    [
        "Matrix, The (1999)",  # 0
        "Matrix Reloaded, The (2003)",  # 1
        "Animatrix, The (2003)",  # 2
        "Forrest Gump (1994)",  # 3
        "Hamlet (1948)",  # 4
        "Hamlet (1990)",  # 5
        "Hamlet (1996)",  # 6
        "Seven (a.k.a. Se7en) (1995)",  # 7
        "Promesse, La (1996)",  # 8
        "Star Wars: Episode IV - A New Hope (1977)",  # 9
        "Star Wars: Episode V - The Empire Strikes Back (1980)",  # 10
        "Die Hard (1988)",  # 11
        "1984 (1984)",  # 12
        "Blade Runner (1982)",  # 13
        "Blade Runner 2049 (2017)",  # 14
        "Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)",  # 15
        "Schindler's List (1993)",  # 16
    ],
    popularity=[50, 80, 5, 90, 30, 10, 20, 40, 3, 70, 60, 25, 15, 35, 12, 45, 55],
)


@pytest.fixture(scope="module")
def movies() -> TitleSearch:
    return TitleSearch(MOVIES)


def titles(results: list[TitleMatch]) -> list[str]:
    return [match.title for match in results]


# --- normalisation ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, key",
    [
        ("Matrix, The", "matrix"),
        ("the Matrix!", "matrix"),
        ("THE   MATRIX", "matrix"),
        ("Amélie", "amelie"),
        ("Schindler's List", "schindlers list"),
        ("Star Wars: Episode IV - A New Hope", "star wars episode 4 a new hope"),
        ("Die Hard", "die hard"),  # only English articles are dropped from the front
        ("Bug's Life, A", "bugs life"),
        ("Fast & Furious", "fast and furious"),
        ("L.A. Confidential", "la confidential"),
        ("The", "the"),  # an article alone stays
        ("", ""),
    ],
)
def test_normalize_title(text, key):
    assert normalize_title(text) == key


# --- ranking ------------------------------------------------------------------------------------
def test_exact_then_prefix_then_fuzzy_regardless_of_popularity(movies):
    # Matrix Reloaded is more popular than The Matrix, yet the exact title comes first, then the
    # prefix match, then the fuzzy one ("animatrix" contains the word only as a part).
    found = movies.search("matrix", limit=3)
    assert titles(found) == ["The Matrix (1999)", "The Matrix Reloaded (2003)", "The Animatrix (2003)"]
    assert [m.exact for m in found] == [True, False, False]
    assert found[0].score == 100.0 and found[0].item_idx == 0
    # prefix: token containment scaled like WRatio for a title 2.5x longer -> 100 * 0.9
    assert found[1].score == pytest.approx(90.0)


@pytest.mark.parametrize("query", ["matrix", "the matrix", "The Matrix", "MATRIX!", "Matrix, The", "Matrix, The (1999)", "the matrix 1999"])
def test_article_case_punctuation_and_year_forms_are_exact(movies, query):
    best = movies.best_match(query)
    assert best is not None and best.title == "The Matrix (1999)" and best.exact and best.score == 100.0


def test_typo_scores_are_rapidfuzz_ratio(movies):
    best = movies.best_match("forest gump")
    assert best.title == "Forrest Gump (1994)" and not best.exact
    # fuzz.ratio = 2 * 11 matching characters / (11 + 12) characters = 95.65...
    assert best.score == pytest.approx(95.7)


def test_typing_a_prefix_finds_the_title(movies):
    assert movies.best_match("matri").title == "The Matrix (1999)"
    assert movies.best_match("forr").title == "Forrest Gump (1994)"


def test_year_in_query_picks_that_year_and_costs_the_others(movies):
    # without a year: all three are exact; the most popular comes first
    assert titles(movies.search("hamlet", limit=3)) == ["Hamlet (1948)", "Hamlet (1996)", "Hamlet (1990)"]
    for query in ("hamlet 1996", "Hamlet (1996)", "hamlet, 1996"):
        found = movies.search(query, limit=3)
        assert titles(found) == ["Hamlet (1996)", "Hamlet (1948)", "Hamlet (1990)"]
        assert [m.exact for m in found] == [True, False, False]
        assert [m.score for m in found] == [100.0, 90.0, 90.0]  # 10-point penalty for another year


def test_numbers_in_titles_are_not_mistaken_for_years(movies):
    assert movies.best_match("1984").title == "1984 (1984)"
    assert movies.best_match("blade runner 2049").title == "Blade Runner 2049 (2017)"
    assert movies.best_match("blade runner").title == "Blade Runner (1982)"


def test_alternative_titles_and_foreign_articles(movies):
    assert movies.best_match("se7en").title == "Seven (a.k.a. Se7en) (1995)"
    assert movies.best_match("la promesse").title == "La Promesse (1996)"
    assert movies.best_match("promesse").title == "La Promesse (1996)"
    assert movies.best_match("amelie").item_idx == 15
    assert movies.best_match("fabuleux destin d amelie poulain").item_idx == 15
    assert movies.best_match("die hard").title == "Die Hard (1988)"


def test_words_in_any_order_and_missing_words(movies):
    assert movies.best_match("empire strikes back").item_idx == 10
    assert movies.best_match("star wars episode 5").item_idx == 10
    assert movies.best_match("schindlers list").item_idx == 16
    assert movies.best_match("list schindler").item_idx == 16


def test_each_item_once_and_limit(movies):
    found = movies.search("seven se7en", limit=10)
    assert len({m.item_idx for m in found}) == len(found)
    assert len(movies.search("hamlet", limit=2)) == 2
    assert movies.search("hamlet", limit=0) == []


def test_popularity_then_index_break_ties():
    search = TitleSearch(catalogue(["Twin A (2000)", "Twin B (2000)", "Twin C (2000)"], popularity=[1, 5, 1]))
    found = search.search("twin", limit=3)
    assert [m.item_idx for m in found] == [1, 0, 2]
    assert len({m.score for m in found}) == 1


def test_min_score_filters_weak_matches(movies):
    assert movies.search("zzzz qqqq xxxx") == []
    assert all(m.score >= 90 for m in movies.search("hamlet", min_score=90))


# --- resolve ------------------------------------------------------------------------------------
def test_resolve_exact_is_never_ambiguous(movies):
    match, candidates, ambiguous = movies.resolve("hamlet")
    assert match.title == "Hamlet (1948)" and match.exact and not ambiguous
    assert titles(candidates)[:3] == ["Hamlet (1948)", "Hamlet (1996)", "Hamlet (1990)"]


def test_resolve_close_candidates_are_ambiguous(movies):
    match, candidates, ambiguous = movies.resolve("star wars")
    assert ambiguous
    assert match.item_idx == 9  # the more popular of the two episodes
    assert {m.item_idx for m in candidates[:2]} == {9, 10}
    # a typo that fits three titles equally well
    match, candidates, ambiguous = movies.resolve("hamlot")
    assert ambiguous and match.title == "Hamlet (1948)" and not match.exact
    assert titles(candidates)[:3] == ["Hamlet (1948)", "Hamlet (1996)", "Hamlet (1990)"]


def test_resolve_typo_is_a_confident_match(movies):
    match, candidates, ambiguous = movies.resolve("forest gump")
    assert match.title == "Forrest Gump (1994)" and not ambiguous and candidates[0] == match


def test_resolve_far_query_gives_suggestions_but_no_match(movies):
    match, candidates, ambiguous = movies.resolve("blade rummer x")
    assert match is None and not ambiguous
    assert titles(candidates) == ["Blade Runner 2049 (2017)", "Blade Runner (1982)"]
    assert all(50 <= c.score < 80 for c in candidates)
    assert movies.resolve("zzzz qqqq") == (None, [], False)


# --- hostile input ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "query",
    ["", "   ", "\x00\x01\x02", "\n\t\r", "🎬🍿", "((((", "%s%s%n", "\u202e\u200b", "a" * 10_000, "The", ",", "'", None, 42, b"bytes"],
)
def test_hostile_queries_never_raise(movies, query):
    found = movies.search(query)
    assert isinstance(found, list)
    assert all(0.0 <= m.score <= 100.0 for m in found)
    match, candidates, ambiguous = movies.resolve(query)
    assert isinstance(ambiguous, bool)


def test_long_queries_are_cut(movies):
    query = "Forrest Gump" + " " * 10_000 + "zzzz"
    assert movies.best_match(query).title == "Forrest Gump (1994)"
    assert MAX_QUERY_CHARS < 10_000


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=60))
def test_any_text_gives_sorted_clean_results(query):
    search = TitleSearch(MOVIES)
    found = search.search(query, limit=5)
    assert len(found) <= 5 and len({m.item_idx for m in found}) == len(found)
    assert all(0.0 <= m.score <= 100.0 and 0 <= m.item_idx < len(MOVIES) for m in found)
    tiers = [m.exact for m in found]
    assert tiers == sorted(tiers, reverse=True)  # exact matches come first


def test_empty_catalogue_and_missing_columns():
    assert TitleSearch(catalogue([])).search("matrix") == []
    with pytest.raises(ValueError, match="title"):
        TitleSearch(pd.DataFrame({"name": ["x"]}))


# --- recall against known answers on a larger random catalogue -----------------------------------
def test_one_typo_still_finds_the_title_among_many():
    rng = np.random.default_rng(7)
    syllables = ["ka", "lo", "mi", "ra", "ten", "bor", "ish", "an", "vel", "dor", "ux", "pre", "zen", "ta", "mor", "sil"]
    words = sorted({"".join(rng.choice(syllables, rng.integers(2, 4))) for _ in range(600)})
    names = sorted({" ".join(rng.choice(words, rng.integers(1, 5))).title() for _ in range(3000)})
    search = TitleSearch(catalogue([f"{name} ({rng.integers(1950, 2020)})" for name in names], popularity=rng.integers(1, 100, len(names)).tolist()))
    picked = rng.choice(len(names), 200, replace=False)
    found_top3 = 0
    for index in picked.tolist():
        name = names[index]
        cut = int(rng.integers(0, len(name)))
        typo = name[:cut] + name[cut + 1 :]  # drop one character
        top = [m.item_idx for m in search.search(typo, limit=3)]
        # a dropped character can make another title an exact match; count those as found
        found_top3 += index in top or normalize_title(typo) in {normalize_title(names[i]) for i in top}
    assert found_top3 >= 194, f"only {found_top3}/200 typo queries found their title in the top 3"


# --- real MovieLens titles ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def ml100k_search() -> TitleSearch:
    from recengine.data.movielens import load_movielens

    return TitleSearch(load_movielens(require_release("ml-100k"), "ml-100k").catalogue)


@pytest.fixture(scope="module")
def small_search() -> TitleSearch:
    from recengine.data.movielens import load_movielens

    return TitleSearch(load_movielens(require_release("ml-latest-small"), "ml-latest-small").catalogue)


def test_real_ml100k(ml100k_search):
    assert ml100k_search.best_match("forest gump").title == "Forrest Gump (1994)"
    star_wars = ml100k_search.best_match("Star Wars 1977")
    assert star_wars.title == "Star Wars (1977)" and star_wars.exact
    match, _, ambiguous = ml100k_search.resolve("matrix")  # not in ml-100k (1998)
    assert match is None and not ambiguous


def test_real_ml_latest_small(small_search):
    assert small_search.best_match("forest gump").title == "Forrest Gump (1994)"
    for query in ("matrix", "the matrix", "Matrix, The (1999)"):
        best = small_search.best_match(query)
        assert best.title == "The Matrix (1999)" and best.exact
    assert small_search.best_match("Star Wars 1977").title == "Star Wars: Episode IV - A New Hope (1977)"
    assert small_search.best_match("spiderman").title == "Spider-Man (2002)"
    assert small_search.best_match("lord of the rings").title.startswith("The Lord of the Rings")


# --- the word cache and the length pruning ------------------------------------------------------
@pytest.fixture(scope="module")
def pseudo_catalogue() -> pd.DataFrame:
    """3,000 made-up titles with years and popularity (a vocabulary of a few thousand words)."""
    from recengine.data.synthetic import generate_synthetic

    return generate_synthetic(200, 3000, 6000, titles="pseudo", seed=4).catalogue


def typed(query: str) -> list[str]:
    return [query[:end] for end in range(1, len(query) + 1)]


def test_cached_search_equals_uncached_while_typing(pseudo_catalogue):
    cached, uncached = TitleSearch(pseudo_catalogue, word_cache_size=8), TitleSearch(pseudo_catalogue, word_cache_size=0)
    names = pseudo_catalogue["display_title"].str.split(" (", n=1, regex=False).str[0].tolist()
    queries = [names[0].lower(), names[7], names[42][:3] + names[42][4] + names[42][3] + names[42][5:],
               "the silent river", "midnigth gardn", "love", "Matrix, The (1999)", "star wars 1977"]
    typed_queries = [prefix for query in queries for prefix in typed(query)]
    typed_queries += typed(queries[3])[::-1]  # backspacing: the words come back from the cache
    for prefix in typed_queries:
        assert cached.search(prefix, limit=6) == uncached.search(prefix, limit=6), prefix
    for query in queries:
        assert cached.resolve(query) == uncached.resolve(query), query
    assert 0 < len(cached._word_cache) <= 8
    assert len(uncached._word_cache) == 0


def test_close_words_scores_only_lengths_that_can_reach_the_cutoff(pseudo_catalogue):
    """The length-pruned fuzzy word match equals `fuzz.ratio` over the whole vocabulary."""
    from rapidfuzz import fuzz, process

    search = TitleSearch(pseudo_catalogue, word_cache_size=0)
    vocabulary = search._vocab
    words = sorted({word for word in vocabulary if len(word) >= 4})[::7][:150]
    words += ["abcd", "qqqq", "midnigth", "gardn", "extraordinarily", "a" * 30]
    for word in words:
        cutoff = 75 if len(word) == 4 else 80
        reference = process.cdist([word], vocabulary, scorer=fuzz.ratio, score_cutoff=cutoff, dtype=np.uint8, workers=1)[0]
        close, scores = search._close_words(word)
        assert close.tolist() == np.flatnonzero(reference).tolist(), word
        assert scores.tolist() == reference[close].tolist(), word


def test_word_cache_keeps_the_most_recent_words():
    search = TitleSearch(MOVIES, word_cache_size=2)
    for word in ("matrix", "hamlet", "runner"):
        search._close_words(word)
    assert list(search._word_cache) == ["hamlet", "runner"]
    first = search._close_words("hamlet")  # a hit moves it to the back
    assert search._close_words("hamlet") is first
    assert list(search._word_cache) == ["runner", "hamlet"]
    with pytest.raises(ValueError, match="word_cache_size must be a non-negative integer"):
        TitleSearch(MOVIES, word_cache_size=-1)
