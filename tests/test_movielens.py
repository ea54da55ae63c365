"""MovieLens loading: every release format, the search order, downloads, safe extraction, the parse cache.

Tiny files in each release's format are written into tmp_path by the helpers below, so the
parsing checks are exact; the real-data checks at the end skip when RECENGINE_DATA_DIR is unset.
Nothing here touches the network: `_open_url` is replaced for every test.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import os
import stat
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recengine.data import movielens
from recengine.data.dataset import Dataset
from recengine.data.movielens import (
    CACHE_FILENAME,
    DatasetNotFoundError,
    DownloadError,
    UnsafeArchiveError,
    available_datasets,
    download_dataset,
    find_dataset,
    get_release,
    load_dataset,
    load_movielens,
    parse_md5_text,
    read_links,
    read_tags,
    read_users,
    safe_extract,
    search_places,
)
from tests.conftest import real_data_dir

#: Read at import, before the autouse fixture below clears RECENGINE_DATA_DIR for each test.
REAL_DATA = real_data_dir()

GENRES_100K = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip


# --- fixture writers --------------------------------------------------------------------------


def _flags(*genres: str) -> str:
    return "|".join("1" if name in genres else "0" for name in GENRES_100K)


def write_100k(folder: Path) -> Path:
    """ml-100k layout: 3 users (raw 3, 7, 12), 3 rated movies (raw 1, 5, 9), movie 4 listed but never rated."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_text("7\t5\t4\t881250949\n3\t1\t5\t891717742\n3\t9\t1\t878887116\n12\t5\t2\t880606923\n")
    items = [
        f"1|Matrix, The (1999)|31-Mar-1999||http://x|{_flags('Action', 'Sci-Fi')}",
        f"4|Never Rated (1990)|01-Jan-1990||http://x|{_flags('Drama')}",
        f"5|Misérables, Les (1995)|01-Jan-1995||http://x|{_flags('Drama', 'Musical')}",
        f"9|unknown|01-Jan-1993||http://x|{_flags('unknown')}",
    ]
    (folder / "u.item").write_bytes(("\n".join(items) + "\n").encode("latin-1"))
    (folder / "u.genre").write_text("".join(f"{name}|{k}\n" for k, name in enumerate(GENRES_100K)) + "\n")
    (folder / "u.user").write_text("3|24|M|technician|85711\n7|53|F|other|94043\n12|23|M|writer|32067\n")
    return folder


def write_csv_release(folder: Path) -> Path:
    """ml-latest-small / ml-20m / ml-25m / ml-32m layout (half stars, quoted titles)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n"
        "2,2571,4.5,964982703\n"
        "1,2571,5.0,964981247\n"
        "1,122888,0.5,1493846000\n"
        "2,300,3.0,1000000000\n"  # movie 300 is rated but missing from movies.csv
        "10,1,2.5,1100000000\n"
    )
    (folder / "movies.csv").write_text(
        "movieId,title,genres\n"
        "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
        '2571,"Matrix, The (1999)",Action|Sci-Fi|Thriller\n'
        "99999,Never Rated (2001),Drama\n"
        '122888,"Ben-hur, A",(no genres listed)\n'
    )
    (folder / "tags.csv").write_text('userId,movieId,tag,timestamp\n2,2571,"cyberpunk, classic",1445714994\n1,1,pixar,1139045764\n')
    (folder / "links.csv").write_text("movieId,imdbId,tmdbId\n1,0114709,862\n2571,0133093,603\n122888,2638144,\n")
    return folder


def write_1m(folder: Path) -> Path:
    """ml-1m layout: `::`-separated, latin-1 titles, 1..5 stars, users.dat."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.dat").write_text("6040::2::3::956703932\n1::1193::5::978300760\n1::2::4::978302109\n")
    movies = "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n2::Misérables, Les (1995)::Drama|Musical\n50::Unrated (1995)::Crime\n"
    (folder / "movies.dat").write_bytes(movies.encode("latin-1"))
    (folder / "users.dat").write_text("1::F::1::10::48067\n6040::M::25::6::11106\n")
    return folder


def write_10m(folder: Path) -> Path:
    """ml-10m layout (folder ml-10M100K in the zip): `::`-separated, utf-8 titles, half stars, tags.dat."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.dat").write_text("5::122::3.5::838985046\n1::185::0.5::838983525\n5::8606::5::1100000000\n")
    movies = "122::Boomerang (1992)::Comedy|Romance\n185::Net, The (1995)::Action|Crime|Thriller\n8606::Pull My Daisy (1958)::(no genres listed)\n"
    (folder / "movies.dat").write_bytes(movies.encode("utf-8"))
    (folder / "tags.dat").write_text("15::4973::excellent!::1215184630\n20::1747::politics::1188263867\n")
    return folder


def zip_release(folder: Path, inner: str) -> bytes:
    """The bytes of a zip holding `folder`'s files under `inner/`, as GroupLens packs a release."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{inner}/", "")
        for path in sorted(folder.iterdir()):
            archive.write(path, f"{inner}/{path.name}")
    return buffer.getvalue()


class FakeResponse(io.BytesIO):
    """What `urllib.request.urlopen` returns, enough for the downloader."""

    def __init__(self, body: bytes, length: int | None = None) -> None:
        super().__init__(body)
        self.status = 200
        self.headers = {} if length is None else {"Content-Length": str(length)}


def serve(monkeypatch: pytest.MonkeyPatch, routes: dict[str, bytes | Exception], lengths: dict[str, int] | None = None) -> list[str]:
    """Replace the URL opener with one serving `routes` (an Exception is raised); returns the URLs asked for."""
    asked: list[str] = []

    def fake_open(url: str, timeout: float = 60.0) -> FakeResponse:
        asked.append(url)
        body = routes.get(url, urllib.error.URLError(f"no route to {url} in this test"))
        if isinstance(body, Exception):
            raise body
        return FakeResponse(body, (lengths or {}).get(url, len(body)))

    monkeypatch.setattr(movielens, "_open_url", fake_open)
    return asked


@pytest.fixture(autouse=True)
def _no_network_and_no_project_data(monkeypatch, tmp_path_factory):
    """No test reaches the network, and the repository's own data/ folder never leaks in."""
    serve(monkeypatch, {})
    project_data = tmp_path_factory.mktemp("project") / "data"
    monkeypatch.setattr(movielens, "project_data_dir", lambda: project_data)
    monkeypatch.delenv(movielens.DATA_DIR_ENV, raising=False)


def catalogue_rows(data: Dataset) -> list[tuple]:
    """(item_id, title, display_title, year or None, genres) per catalogue row."""
    frame = data.catalogue
    years = [None if pd.isna(year) else int(year) for year in frame["year"].tolist()]
    return list(zip(frame["item_id"].tolist(), frame["title"].tolist(), frame["display_title"].tolist(), years, frame["genres"].tolist()))


# --- parsing each release format ---------------------------------------------------------------


def test_ml_100k_format_is_parsed_exactly(tmp_path):
    folder = write_100k(tmp_path / "ml-100k")
    data = load_movielens(folder, "ml-100k")

    assert data.name == "ml-100k" and data.source == folder and data.rating_scale == (1.0, 5.0)
    assert data.user_map.ids.tolist() == [3, 7, 12]  # sorted raw ids -> indices 0, 1, 2
    assert data.item_map.ids.tolist() == [1, 5, 9]  # movie 4 is listed but never rated: dropped
    assert data.users.tolist() == [1, 0, 0, 2] and data.users.dtype == np.int32
    assert data.items.tolist() == [1, 0, 2, 1] and data.items.dtype == np.int32
    assert data.ratings.tolist() == [4.0, 5.0, 1.0, 2.0] and data.ratings.dtype == np.float32
    assert data.timestamps.tolist() == [881250949, 891717742, 878887116, 880606923] and data.timestamps.dtype == np.int64
    assert catalogue_rows(data) == [
        (1, "Matrix, The (1999)", "The Matrix (1999)", 1999, ("Action", "Sci-Fi")),
        (5, "Misérables, Les (1995)", "Les Misérables (1995)", 1995, ("Drama", "Musical")),
        (9, "unknown", "unknown", 1993, ()),  # year from the release date; the "unknown" genre means none
    ]
    assert data.catalogue["popularity"].tolist() == [1, 2, 1]
    assert data.catalogue["mean_rating"].tolist() == [5.0, 3.0, 1.0]


def test_csv_release_format_is_parsed_exactly(tmp_path):
    folder = write_csv_release(tmp_path / "ml-latest-small")
    data = load_movielens(folder, "ml-latest-small")

    assert data.rating_scale == (0.5, 5.0)
    assert data.user_map.ids.tolist() == [1, 2, 10]
    assert data.item_map.ids.tolist() == [1, 300, 2571, 122888]
    assert data.users.tolist() == [1, 0, 0, 1, 2]
    assert data.items.tolist() == [2, 2, 3, 1, 0]
    assert data.ratings.tolist() == [4.5, 5.0, 0.5, 3.0, 2.5]
    assert data.timestamps.tolist() == [964982703, 964981247, 1493846000, 1000000000, 1100000000]
    assert catalogue_rows(data) == [
        (1, "Toy Story (1995)", "Toy Story (1995)", 1995, ("Adventure", "Animation", "Children", "Comedy", "Fantasy")),
        (300, "Item 300", "Item 300", None, ()),  # rated but missing from movies.csv
        (2571, "Matrix, The (1999)", "The Matrix (1999)", 1999, ("Action", "Sci-Fi", "Thriller")),
        (122888, "Ben-hur, A", "A Ben-hur", None, ()),  # "(no genres listed)" -> no genres, no year in title
    ]


@pytest.mark.parametrize("name", ["ml-20m", "ml-25m", "ml-32m"])
def test_large_csv_releases_share_the_format(tmp_path, name):
    data = load_movielens(write_csv_release(tmp_path / name), name, cache=False)
    assert (data.name, data.n_users, data.n_items, len(data)) == (name, 3, 4, 5)


def test_ml_1m_format_is_parsed_exactly(tmp_path):
    folder = write_1m(tmp_path / "ml-1m")
    data = load_movielens(folder, "ml-1m", cache=False)

    assert data.rating_scale == (1.0, 5.0)
    assert data.user_map.ids.tolist() == [1, 6040]
    assert data.item_map.ids.tolist() == [2, 1193]
    assert data.users.tolist() == [1, 0, 0]
    assert data.items.tolist() == [0, 1, 0]
    assert data.ratings.tolist() == [3.0, 5.0, 4.0]
    assert data.timestamps.tolist() == [956703932, 978300760, 978302109]
    assert catalogue_rows(data) == [
        (2, "Misérables, Les (1995)", "Les Misérables (1995)", 1995, ("Drama", "Musical")),
        (1193, "One Flew Over the Cuckoo's Nest (1975)", "One Flew Over the Cuckoo's Nest (1975)", 1975, ("Drama",)),
    ]


def test_ml_10m_format_is_parsed_exactly(tmp_path):
    folder = write_10m(tmp_path / "ml-10M100K")
    data = load_movielens(folder, "ml-10m", cache=False)

    assert data.name == "ml-10m" and data.rating_scale == (0.5, 5.0)
    assert data.user_map.ids.tolist() == [1, 5] and data.item_map.ids.tolist() == [122, 185, 8606]
    assert data.users.tolist() == [1, 0, 1] and data.items.tolist() == [0, 1, 2]
    assert data.ratings.tolist() == [3.5, 0.5, 5.0]
    assert data.timestamps.tolist() == [838985046, 838983525, 1100000000]
    assert catalogue_rows(data)[1:] == [
        (185, "Net, The (1995)", "The Net (1995)", 1995, ("Action", "Crime", "Thriller")),
        (8606, "Pull My Daisy (1958)", "Pull My Daisy (1958)", 1958, ()),
    ]


def test_contiguous_indices_follow_sorted_raw_ids_for_any_ids():
    raw = np.array([900_000_000_000, 5, 900_000_000_000, -3, 5], dtype=np.int64)  # too sparse for the table
    ids, index = movielens._contiguous(raw)
    assert ids.tolist() == [-3, 5, 900_000_000_000] and index.tolist() == [2, 1, 2, 0, 1]
    dense = np.array([4, 2, 2, 9], dtype=np.int64)
    ids, index = movielens._contiguous(dense)
    assert ids.tolist() == [2, 4, 9] and index.tolist() == [1, 0, 0, 2] and index.dtype == np.int32


def test_ratings_outside_the_release_scale_are_refused(tmp_path):
    folder = write_100k(tmp_path / "ml-100k")
    (folder / "u.data").write_text("1\t1\t0.5\t881250949\n")  # ml-100k starts at 1 star
    with pytest.raises(ValueError, match=r"ratings lie in 1.0..5.0, found 0.5..0.5"):
        load_movielens(folder, "ml-100k")


def test_malformed_ratings_name_the_file(tmp_path):
    folder = write_csv_release(tmp_path / "ml-latest-small")
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,2571,five,964981247\n")
    with pytest.raises(ValueError, match=r"could not parse .*ratings\.csv"):
        load_movielens(folder, "ml-latest-small")


def test_a_folder_without_the_release_files_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"expected ratings\.dat and movies\.dat"):
        load_movielens(tmp_path, "ml-1m")


def test_optional_parts_users_tags_links(tmp_path):
    users_100k = read_users(write_100k(tmp_path / "ml-100k"), "ml-100k")
    assert users_100k.to_dict("list") == {
        "user_id": [3, 7, 12], "age": [24, 53, 23], "gender": ["M", "F", "M"],
        "occupation": ["technician", "other", "writer"], "zip_code": ["85711", "94043", "32067"],
    }  # fmt: skip
    users_1m = read_users(write_1m(tmp_path / "ml-1m"), "ml-1m")
    assert users_1m.to_dict("list") == {
        "user_id": [1, 6040], "age": [1, 25], "gender": ["F", "M"], "occupation": [10, 6], "zip_code": ["48067", "11106"]
    }  # fmt: skip
    csv_folder = write_csv_release(tmp_path / "ml-latest-small")
    assert read_users(csv_folder, "ml-latest-small") is None
    assert read_tags(csv_folder, "ml-latest-small").to_dict("list") == {
        "user_id": [2, 1], "item_id": [2571, 1], "tag": ["cyberpunk, classic", "pixar"], "timestamp": [1445714994, 1139045764]
    }  # fmt: skip
    links = read_links(csv_folder, "ml-latest-small")
    assert links["imdb_id"].tolist() == ["0114709", "0133093", "2638144"]
    assert links["tmdb_id"].tolist()[:2] == [862, 603] and links["tmdb_id"].isna().tolist() == [False, False, True]
    tags_10m = read_tags(write_10m(tmp_path / "ml-10M100K"), "ml-10m")
    assert tags_10m["tag"].tolist() == ["excellent!", "politics"] and tags_10m["item_id"].tolist() == [4973, 1747]
    assert read_links(tmp_path / "ml-1m", "ml-1m") is None


# --- release table and names -------------------------------------------------------------------


def test_release_table():
    assert list(movielens.RELEASES) == ["ml-100k", "ml-latest-small", "ml-1m", "ml-10m", "ml-20m", "ml-25m", "ml-32m"]
    assert get_release("ml-25m").url == "https://files.grouplens.org/datasets/movielens/ml-25m.zip"
    assert get_release("ml-10m").folder == "ml-10M100K" and get_release("ML-10M100K").name == "ml-10m"
    assert {name for name, r in movielens.RELEASES.items() if r.rating_scale == (1.0, 5.0)} == {"ml-100k", "ml-1m"}
    assert {name for name, r in movielens.RELEASES.items() if not r.cache_by_default} == {"ml-100k", "ml-latest-small"}
    with pytest.raises(ValueError, match="layout must be one of"):
        movielens.Release("x", "x", "tsv", (1.0, 5.0), "utf-8", 1, "x")


def test_unknown_names_list_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown MovieLens release 'ml-2m'; known datasets: ml-100k, .*ml-32m, synthetic"):
        load_dataset("ml-2m")
    with pytest.raises(ValueError, match="known datasets"):
        find_dataset("netflix")


def test_parse_md5_text_reads_both_layouts():
    digest = "6b51fb2759a8657d3bfcbfc42b592ada"
    assert parse_md5_text(f"MD5 (ml-25m.zip) = {digest}\n") == digest
    assert parse_md5_text(f"{digest.upper()}  ml-25m.zip\n") == digest
    assert parse_md5_text("<html>Not Found</html>") is None


# --- finding data --------------------------------------------------------------------------------


def test_search_order_env_then_project_then_cache(tmp_path, monkeypatch):
    env, project, xdg = tmp_path / "env", tmp_path / "project" / "data", tmp_path / "xdg"
    monkeypatch.setenv("RECENGINE_DATA_DIR", str(env))
    monkeypatch.setattr(movielens, "project_data_dir", lambda: project)
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    for root in (env, project, xdg / "recengine"):
        write_1m(root / "ml-1m")

    assert find_dataset("ml-1m") == env / "ml-1m"
    (env / "ml-1m" / "movies.dat").unlink()  # an incomplete folder does not count
    assert find_dataset("ml-1m") == project / "ml-1m"
    (project / "ml-1m" / "ratings.dat").unlink()
    assert find_dataset("ml-1m") == xdg / "recengine" / "ml-1m"
    (xdg / "recengine" / "ml-1m" / "ratings.dat").unlink()
    assert find_dataset("ml-1m") is None
    assert search_places("ml-1m") == [env / "ml-1m", project / "ml-1m", xdg / "recengine" / "ml-1m"]


def test_env_may_name_the_zip_folder_or_the_release_folder_itself(tmp_path, monkeypatch):
    inner = write_10m(tmp_path / "env" / "ml-10M100K")
    monkeypatch.setenv("RECENGINE_DATA_DIR", str(tmp_path / "env"))
    assert find_dataset("ml-10m") == inner
    monkeypatch.setenv("RECENGINE_DATA_DIR", str(inner))
    assert find_dataset("ml-10m") == inner
    assert find_dataset("ml-1m") is None  # a folder named for another release is not taken for ml-1m


def test_user_cache_defaults_to_home(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert movielens.cache_dir() == tmp_path / ".cache" / "recengine"
    write_100k(tmp_path / ".cache" / "recengine" / "ml-100k")
    assert find_dataset("ml-100k") == tmp_path / ".cache" / "recengine" / "ml-100k"


def test_missing_dataset_error_lists_every_place_and_the_fixes(tmp_path, monkeypatch):
    monkeypatch.setenv("RECENGINE_DATA_DIR", str(tmp_path / "env"))
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset("ml-10m")
    error = caught.value
    assert isinstance(error, FileNotFoundError) and error.places == search_places("ml-10m")
    message = str(error)
    for place in search_places("ml-10m"):
        assert f"  - {place}\n" in message
    assert str(tmp_path / "env" / "ml-10M100K") in message
    assert "python -m recengine download ml-10m" in message and "RECENGINE_DATA_DIR" in message
    assert str(copy.deepcopy(error)) == message  # rebuilt through __reduce__, as pickling between processes does

    monkeypatch.delenv("RECENGINE_DATA_DIR")
    assert "(RECENGINE_DATA_DIR is not set)" in str(DatasetNotFoundError("ml-1m", search_places("ml-1m")))


def test_load_dataset_finds_and_parses(tmp_path, monkeypatch):
    write_1m(tmp_path / "ml-1m")
    monkeypatch.setenv("RECENGINE_DATA_DIR", str(tmp_path))
    data = load_dataset("ml-1m", cache=False)
    assert (data.n_users, data.n_items, len(data), data.source) == (2, 2, 3, tmp_path / "ml-1m")


def test_available_datasets(tmp_path, monkeypatch):
    write_1m(tmp_path / "ml-1m")
    monkeypatch.setenv("RECENGINE_DATA_DIR", str(tmp_path))
    infos = {info.name: info for info in available_datasets()}
    assert list(infos) == [*movielens.RELEASES, "synthetic"]
    assert infos["ml-1m"].path == tmp_path / "ml-1m" and infos["ml-1m"].available
    assert infos["ml-25m"].path is None and not infos["ml-25m"].available and infos["ml-25m"].downloadable
    assert infos["ml-25m"].n_ratings == 25_000_095 and infos["ml-100k"].download_bytes == 4_924_029
    assert infos["synthetic"].available and not infos["synthetic"].downloadable


def test_synthetic_comes_from_the_generator():
    synthetic = pytest.importorskip("recengine.data.synthetic")
    data, reference = load_dataset("synthetic"), synthetic.generate_synthetic(seed=0)
    assert isinstance(data, Dataset)
    np.testing.assert_array_equal(data.users, reference.users)
    np.testing.assert_array_equal(data.items, reference.items)
    np.testing.assert_array_equal(data.ratings, reference.ratings)


# --- safe extraction -----------------------------------------------------------------------------


def _zip_with(member: zipfile.ZipInfo | str, body: bytes = b"payload") -> zipfile.ZipFile:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("ml-100k/u.data", b"1\t1\t5\t0\n")
        archive.writestr(member, body)
    return zipfile.ZipFile(io.BytesIO(buffer.getvalue()))


def _symlink_member(name: str, target: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # unix
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        ("../evil.txt", "outside"),
        ("ml-100k/../../evil.txt", "outside"),
        ("/tmp/evil.txt", "absolute"),
        ("C:/evil.txt", "absolute"),
        (_symlink_member("ml-100k/link", "/etc/passwd"), "symbolic link"),
    ],
)
def test_unsafe_zip_members_are_refused_before_anything_is_written(tmp_path, member, reason):
    target = tmp_path / "inside" / "target"
    target.mkdir(parents=True)
    with pytest.raises(UnsafeArchiveError, match=reason):
        safe_extract(_zip_with(member, b"/etc/passwd" if isinstance(member, zipfile.ZipInfo) else b"x"), target)
    assert list(target.iterdir()) == [] and sorted(p.name for p in tmp_path.rglob("*")) == ["inside", "target"]


def test_zip_declaring_too_much_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(movielens, "MAX_UNPACKED_BYTES", 100)
    with pytest.raises(UnsafeArchiveError, match="declares 108 bytes, more than the 100 allowed"):
        safe_extract(_zip_with("ml-100k/u.item", b"x" * 100), tmp_path)


def test_safe_zip_is_extracted(tmp_path):
    safe_extract(_zip_with("ml-100k/sub/./u.item", b"hello"), tmp_path)
    assert (tmp_path / "ml-100k" / "sub" / "u.item").read_bytes() == b"hello"
    assert (tmp_path / "ml-100k" / "u.data").read_bytes() == b"1\t1\t5\t0\n"


# --- downloading ---------------------------------------------------------------------------------


@pytest.fixture
def release_zip(tmp_path, monkeypatch) -> bytes:
    """A tiny ml-100k zip, registered as the release's known size and MD5."""
    body = zip_release(write_100k(tmp_path / "source"), "ml-100k")
    known = dataclasses.replace(movielens.RELEASES["ml-100k"], zip_bytes=len(body), zip_md5=hashlib.md5(body).hexdigest())
    monkeypatch.setitem(movielens.RELEASES, "ml-100k", known)
    return body


def test_download_verifies_extracts_and_reports_progress(tmp_path, monkeypatch, release_zip):
    url = movielens.RELEASES["ml-100k"].url
    serve(monkeypatch, {url: release_zip})
    calls: list[tuple[int, int | None]] = []

    folder = download_dataset("ml-100k", dest=tmp_path / "dest", progress=lambda done, total: calls.append((done, total)))

    assert folder == tmp_path / "dest" / "ml-100k"
    assert sorted(p.name for p in folder.iterdir()) == ["u.data", "u.genre", "u.item", "u.user"]
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == ["ml-100k"]  # no temporary leftovers
    assert calls[0] == (0, len(release_zip)) and calls[-1] == (len(release_zip), len(release_zip))
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    assert load_movielens(folder, "ml-100k").item_map.ids.tolist() == [1, 5, 9]


def test_download_refuses_a_checksum_mismatch(tmp_path, monkeypatch, release_zip):
    release = movielens.RELEASES["ml-100k"]
    monkeypatch.setitem(movielens.RELEASES, "ml-100k", dataclasses.replace(release, zip_md5="0" * 32))
    serve(monkeypatch, {release.url: release_zip})
    with pytest.raises(DownloadError, match=f"checksum mismatch .* expected MD5 {'0' * 32}, got {release.zip_md5}"):
        download_dataset("ml-100k", dest=tmp_path / "dest")
    assert list((tmp_path / "dest").iterdir()) == []


def test_download_refuses_a_wrong_size_or_a_cut_short_transfer(tmp_path, monkeypatch, release_zip):
    url = movielens.RELEASES["ml-100k"].url
    serve(monkeypatch, {url: release_zip[:-10]})
    with pytest.raises(DownloadError, match=f"has {len(release_zip) - 10} bytes, expected {len(release_zip)}"):
        download_dataset("ml-100k", dest=tmp_path / "dest")
    serve(monkeypatch, {url: release_zip[:-10]}, lengths={url: len(release_zip)})
    with pytest.raises(DownloadError, match="cut short"):
        download_dataset("ml-100k", dest=tmp_path / "dest")
    assert list((tmp_path / "dest").iterdir()) == []


def test_download_without_a_known_digest_uses_the_published_md5_file(tmp_path, monkeypatch, release_zip):
    release = dataclasses.replace(movielens.RELEASES["ml-100k"], zip_bytes=None, zip_md5=None)
    monkeypatch.setitem(movielens.RELEASES, "ml-100k", release)
    good = f"MD5 (ml-100k.zip) = {hashlib.md5(release_zip).hexdigest()}\n".encode()
    asked = serve(monkeypatch, {release.url: release_zip, release.md5_url: good})
    assert download_dataset("ml-100k", dest=tmp_path / "a").name == "ml-100k"
    assert asked == [release.url, release.md5_url]

    serve(monkeypatch, {release.url: release_zip, release.md5_url: b"ffffffffffffffffffffffffffffffff  ml-100k.zip\n"})
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download_dataset("ml-100k", dest=tmp_path / "b")

    serve(monkeypatch, {release.url: release_zip})  # no .md5 file to be had: the zip's own CRCs remain
    assert download_dataset("ml-100k", dest=tmp_path / "c").is_dir()


def test_download_rejects_an_archive_without_the_release(tmp_path, monkeypatch):
    body = zip_release(write_1m(tmp_path / "source"), "ml-1m")
    release = dataclasses.replace(movielens.RELEASES["ml-100k"], zip_bytes=None, zip_md5=hashlib.md5(body).hexdigest())
    monkeypatch.setitem(movielens.RELEASES, "ml-100k", release)
    serve(monkeypatch, {release.url: body})
    with pytest.raises(DownloadError, match=r"does not contain ml-100k/u\.data, ml-100k/u\.item"):
        download_dataset("ml-100k", dest=tmp_path / "dest")
    assert list((tmp_path / "dest").iterdir()) == []


def test_load_dataset_downloads_into_the_user_cache_when_asked(monkeypatch, release_zip):
    serve(monkeypatch, {movielens.RELEASES["ml-100k"].url: release_zip})
    with pytest.raises(DatasetNotFoundError):
        load_dataset("ml-100k")  # download is off by default
    data = load_dataset("ml-100k", download=True)
    assert data.source == movielens.cache_dir() / "ml-100k" and len(data) == 4
    assert find_dataset("ml-100k") == data.source


def test_failed_download_becomes_a_not_found_error(monkeypatch):
    serve(monkeypatch, {})
    with pytest.raises(DatasetNotFoundError, match=r"(?s)Looked in:.*Downloading it failed: could not download"):
        load_dataset("ml-1m", download=True)


# --- binary parse cache --------------------------------------------------------------------------


def _forbid_parsing(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the source files were parsed although a valid cache exists")

    monkeypatch.setattr(movielens, "_parse_release", fail)


def _assert_same(a: Dataset, b: Dataset) -> None:
    for field in ("users", "items", "ratings", "timestamps"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
        assert getattr(a, field).dtype == getattr(b, field).dtype
    np.testing.assert_array_equal(a.user_map.ids, b.user_map.ids)
    np.testing.assert_array_equal(a.item_map.ids, b.item_map.ids)
    assert catalogue_rows(a) == catalogue_rows(b)
    assert (a.name, a.rating_scale, a.source) == (b.name, b.rating_scale, b.source)


def test_cache_is_used_on_the_second_load(tmp_path, monkeypatch):
    folder = write_csv_release(tmp_path / "ml-25m")
    first = load_movielens(folder, "ml-25m")  # large releases cache by default
    assert (folder / CACHE_FILENAME).is_file()
    with np.load(folder / CACHE_FILENAME, allow_pickle=False) as stored:
        assert stored["users"].dtype == np.int32 and stored["timestamps"].dtype == np.int64

    _forbid_parsing(monkeypatch)
    _assert_same(load_movielens(folder, "ml-25m"), first)


def test_cache_keeps_ml_100k_years_and_latin1_titles(tmp_path, monkeypatch):
    folder = write_100k(tmp_path / "ml-100k")
    first = load_movielens(folder, "ml-100k", cache=True)
    _forbid_parsing(monkeypatch)
    second = load_movielens(folder, "ml-100k", cache=True)
    _assert_same(second, first)
    assert catalogue_rows(second)[2] == (9, "unknown", "unknown", 1993, ())


def test_cache_is_rebuilt_when_a_source_file_changes(tmp_path, monkeypatch):
    folder = write_csv_release(tmp_path / "ml-25m")
    load_movielens(folder, "ml-25m")
    with open(folder / "ratings.csv", "a") as out:
        out.write("11,1,4.0,1200000000\n")
    changed = load_movielens(folder, "ml-25m")
    assert changed.user_map.ids.tolist() == [1, 2, 10, 11] and len(changed) == 6

    # Same size, new content: the modification time tells.
    ratings = folder / "ratings.csv"
    ratings.write_text(ratings.read_text().replace("4.0,1200000000", "3.5,1200000000"))
    info = ratings.stat()
    os.utime(ratings, ns=(info.st_atime_ns, info.st_mtime_ns + 10**9))
    assert load_movielens(folder, "ml-25m").ratings[-1] == 3.5
    _forbid_parsing(monkeypatch)
    assert load_movielens(folder, "ml-25m").ratings[-1] == 3.5  # and the rebuilt cache serves it


def test_damaged_cache_is_replaced(tmp_path):
    folder = write_csv_release(tmp_path / "ml-20m")
    reference = load_movielens(folder, "ml-20m", cache=False)
    (folder / CACHE_FILENAME).write_bytes(b"not a zip at all")
    _assert_same(load_movielens(folder, "ml-20m"), reference)
    with np.load(folder / CACHE_FILENAME, allow_pickle=False) as stored:
        assert stored["ratings"].tolist() == reference.ratings.tolist()


def test_read_only_data_is_cached_in_the_user_cache(tmp_path, monkeypatch):
    folder = write_1m(tmp_path / "ml-1m")
    folder.chmod(0o555)
    try:
        first = load_movielens(folder, "ml-1m")
        assert not (folder / CACHE_FILENAME).exists()
        cached = list((movielens.cache_dir() / "parsed").iterdir())
        assert len(cached) == 1 and cached[0].name.startswith("ml-1m-") and cached[0].name.endswith(CACHE_FILENAME)
        _forbid_parsing(monkeypatch)
        _assert_same(load_movielens(folder, "ml-1m"), first)
    finally:
        folder.chmod(0o755)


def test_small_releases_are_not_cached_unless_asked(tmp_path):
    folder = write_csv_release(tmp_path / "ml-latest-small")
    load_movielens(folder, "ml-latest-small")
    assert not (folder / CACHE_FILENAME).exists()
    load_movielens(folder, "ml-latest-small", cache=True)
    assert (folder / CACHE_FILENAME).exists()


# --- real data (skipped when RECENGINE_DATA_DIR is unset) ---------------------------------------


def use_real_release(monkeypatch: pytest.MonkeyPatch, name: str) -> Path:
    """Point RECENGINE_DATA_DIR back at the real data; skip when the release is absent."""
    if REAL_DATA is None or not (REAL_DATA / name).is_dir():
        pytest.skip(f"{name} not available (set RECENGINE_DATA_DIR)")
    monkeypatch.setenv("RECENGINE_DATA_DIR", str(REAL_DATA))
    return REAL_DATA / name


def test_real_ml_100k(monkeypatch):
    folder = use_real_release(monkeypatch, "ml-100k")
    data = load_dataset("ml-100k")
    assert (data.n_users, data.n_items, len(data)) == (943, 1682, 100_000)
    assert data.rating_scale == (1.0, 5.0) and set(np.unique(data.ratings).tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert data.source == folder and (data.source / "u1.base").is_file()
    assert data.user_map.ids.tolist() == list(range(1, 944)) and data.item_map.ids.tolist() == list(range(1, 1683))
    assert float(data.ratings.mean()) == pytest.approx(3.52986, abs=1e-5)
    catalogue = data.catalogue.set_index("item_id")
    assert catalogue.loc[543, "display_title"] == "Les Misérables (1995)"
    assert catalogue.loc[1, "genres"] == ("Animation", "Children's", "Comedy")


def test_real_ml_latest_small(monkeypatch):
    use_real_release(monkeypatch, "ml-latest-small")
    data = load_dataset("ml-latest-small")
    assert (data.n_users, data.n_items, len(data)) == (610, 9724, 100_836)
    assert data.rating_scale == (0.5, 5.0) and data.ratings.min() == 0.5 and data.ratings.max() == 5.0
    matrix = data.catalogue[data.catalogue["title"] == "Matrix, The (1999)"]
    assert matrix["display_title"].tolist() == ["The Matrix (1999)"]
    assert matrix["year"].tolist() == [1999] and matrix["genres"].tolist() == [("Action", "Sci-Fi", "Thriller")]
    no_genres = data.catalogue[data.catalogue["item_id"] == 122888]  # "Ben-hur (2016)", "(no genres listed)"
    assert no_genres["genres"].tolist() == [()]
