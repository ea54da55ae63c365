"""The Dataset container, id maps and title handling."""

from __future__ import annotations

import numpy as np
import pytest

from recengine.data.dataset import Dataset, IdMap, display_title, make_catalogue, parse_title


def tiny() -> Dataset:
    user_map = IdMap(np.array([10, 20, 30]))
    item_map = IdMap(np.array([7, 3, 99, 5]))
    users = np.array([0, 0, 1, 2, 2, 2])
    items = np.array([1, 0, 0, 3, 2, 0])
    ratings = np.array([4.0, 5.0, 3.0, 1.0, 2.5, 4.5])
    catalogue = make_catalogue(
        item_map.ids,
        ["Matrix, The (1999)", "Toy Story (1995)", "Untitled", "Seven (a.k.a. Se7en) (1995)"],
        [("Action", "Sci-Fi"), ("Animation",), (), ("Thriller",)],
        items,
        ratings,
    )
    return Dataset.from_arrays("tiny", users, items, ratings, np.arange(6), user_map=user_map, item_map=item_map, catalogue=catalogue)


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("Matrix, The (1999)", "The Matrix (1999)"),
        ("Toy Story (1995)", "Toy Story (1995)"),
        ("Haunted World of Edward D. Wood Jr., The (1995)", "The Haunted World of Edward D. Wood Jr. (1995)"),
        ("City of Lost Children, The (Cité des enfants perdus, La) (1995)", "The City of Lost Children (Cité des enfants perdus, La) (1995)"),
        ("Seven (a.k.a. Se7en) (1995)", "Seven (a.k.a. Se7en) (1995)"),
        ("American President, An (1995)", "An American President (1995)"),
        ("Hunger Games, The", "The Hunger Games"),
    ],
)
def test_display_title_moves_trailing_article_to_front(raw: str, shown: str) -> None:
    assert display_title(raw) == shown


def test_parse_title_splits_year() -> None:
    assert parse_title("Matrix, The (1999)") == ("Matrix, The", 1999)
    assert parse_title("Untitled") == ("Untitled", None)


def test_catalogue_counts_popularity_and_mean_rating() -> None:
    data = tiny()
    cat = data.catalogue
    assert cat["popularity"].tolist() == [3, 1, 1, 1]
    np.testing.assert_allclose(cat["mean_rating"].to_numpy(), [(5.0 + 3.0 + 4.5) / 3, 4.0, 2.5, 1.0], rtol=1e-6)
    assert cat.loc[0, "display_title"] == "The Matrix (1999)"
    assert cat.loc[0, "year"] == 1999
    assert cat["year"].isna().tolist() == [False, False, True, False]
    assert cat.loc[0, "genres"] == ("Action", "Sci-Fi")


def test_id_map_both_ways() -> None:
    id_map = IdMap(np.array([7, 3, 99, 5]))
    assert id_map.index_of(99) == 2
    assert id_map.indices_of([5, 7, 1000]).tolist() == [3, 0, -1]
    assert 3 in id_map and 4 not in id_map
    with pytest.raises(KeyError, match="unknown id 4"):
        id_map.index_of(4)
    strings = IdMap(np.array(["b", "a"]))
    assert strings.indices_of(["a", "zz"]).tolist() == [1, -1]
    with pytest.raises(ValueError, match="unique"):
        IdMap(np.array([1, 1]))


def test_csr_groups_items_by_user_sorted() -> None:
    data = tiny()
    indptr, items, ratings = data.user_item_csr()
    assert indptr.tolist() == [0, 2, 3, 6]
    assert data.items_of(0).tolist() == [0, 1]
    assert data.items_of(2).tolist() == [0, 2, 3]
    assert ratings[indptr[2] : indptr[3]].tolist() == [4.5, 2.5, 1.0]


def test_subset_shares_maps_and_repr() -> None:
    data = tiny()
    part = data.subset(data.users == 2, "test")
    assert part.user_map is data.user_map and part.catalogue is data.catalogue
    assert len(part) == 3 and part.n_users == 3
    assert repr(part) == "<Dataset tiny [test] (3 users x 4 items x 3 ratings)>"
    assert part.item_popularity().tolist() == [1, 0, 1, 1]
    frame = part.to_frame()
    assert frame["user_id"].tolist() == [30, 30, 30]
    assert frame["item_id"].tolist() == [5, 99, 7]


def test_inconsistent_arrays_are_rejected() -> None:
    data = tiny()
    with pytest.raises(ValueError, match="differ in length"):
        Dataset.from_arrays("bad", data.users[:2], data.items, data.ratings, user_map=data.user_map, item_map=data.item_map)
    with pytest.raises(ValueError, match="out of range"):
        Dataset.from_arrays("bad", np.array([5]), np.array([0]), np.array([1.0]), user_map=data.user_map, item_map=data.item_map)
