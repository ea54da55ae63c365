"""Bring-your-own ratings: parsing, guessing, every validation message (row and column), save/load, fuzzing."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import require_release
from recengine.data import movielens
from recengine.data.upload import (
    UPLOADS_DIR_ENV,
    UploadError,
    UploadLimits,
    delete_upload,
    import_upload,
    is_upload,
    list_uploads,
    load_upload,
    parse_column_mapping,
    parse_scale,
    parse_upload,
    preview_upload,
    save_upload,
    upload_fingerprint,
    upload_names,
    uploads_dir,
    user_data_dir,
    validate_upload_name,
)


@pytest.fixture(autouse=True)
def _uploads_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(UPLOADS_DIR_ENV, str(tmp_path / "uploads"))


def refused(data, **options) -> UploadError:
    with pytest.raises(UploadError) as caught:
        parse_upload(data, **options)
    assert "\n" not in str(caught.value)
    return caught.value


def only_problem(error: UploadError):
    assert len(error.problems) == 1, error.problems
    return error.problems[0]


# --- reading and guessing --------------------------------------------------------------------------
def test_header_csv_becomes_a_dataset_in_sorted_raw_id_order():
    text = b"userId,movieId,rating,timestamp\n20,7,4,100\n10,7,5,50\n10,3,2,70\n"
    parsed = parse_upload(text, name="mine")
    data = parsed.dataset
    assert data.name == "mine" and repr(data) == "<Dataset mine (2 users x 2 items x 3 ratings)>"
    assert data.user_map.ids.tolist() == [10, 20] and data.item_map.ids.tolist() == [3, 7]
    assert data.user_map.ids.dtype == np.int64
    assert data.users.tolist() == [1, 0, 0] and data.items.tolist() == [1, 1, 0]
    assert data.ratings.tolist() == [4.0, 5.0, 2.0] and data.ratings.dtype == np.float32
    assert data.timestamps.tolist() == [100, 50, 70] and data.timestamps.dtype == np.int64
    assert data.rating_scale == (1.0, 5.0)
    assert data.catalogue["title"].tolist() == ["Item 3", "Item 7"]
    assert data.catalogue["popularity"].tolist() == [1, 2]
    report = parsed.report
    assert report.columns == {"user": "userId", "item": "movieId", "rating": "rating", "timestamp": "timestamp"}
    assert (report.header, report.delimiter, report.encoding, report.scale_inferred) == (True, ",", "utf-8", True)
    assert "3 ratings from 2 users on 2 items, scale 1-5 (inferred)" in report.summary()


def test_headerless_tab_file_maps_columns_by_position():
    parsed = parse_upload(b"1\t10\t3\t881250949\n2\t10\t4\t891717742\n")
    assert parsed.report.header is False and parsed.report.delimiter == "\t"
    assert parsed.report.columns == {"user": "1", "item": "2", "rating": "3", "timestamp": "4"}
    assert parsed.dataset.timestamps.tolist() == [881250949, 891717742]


def test_semicolons_aliases_dates_and_half_stars():
    text = "user_id;item;score;date\nann;Heat;4.5;2024-05-31\nbob;Heat;0.5;2024-06-01T12:00:00Z\n".encode()
    parsed = parse_upload(text)
    data = parsed.dataset
    assert parsed.report.columns == {"user": "user_id", "item": "item", "rating": "score", "timestamp": "date"}
    assert data.user_map.ids.tolist() == ["ann", "bob"] and data.item_map.ids.dtype.kind == "U"
    assert data.rating_scale == (0.5, 5.0)
    assert data.timestamps.tolist() == [1717113600, 1717243200]


def test_double_colon_files_like_movielens_dat():
    parsed = parse_upload(b"1::1193::5::978300760\n1::661::3::978302109\n")
    assert parsed.report.delimiter == "::" and parsed.dataset.item_map.ids.tolist() == [661, 1193]


def test_ids_with_leading_zeros_stay_text():
    data = parse_upload(b"user,item,rating\n007,1,3\n7,1,4\n").dataset
    assert data.user_map.ids.tolist() == ["007", "7"]


def test_column_overrides_by_name_and_position():
    text = b"who,what,stars,extra\na,x,1,9\nb,y,2,9\n"
    parsed = parse_upload(text, columns={"user": "who", "item": "2", "rating": "STARS"})
    assert parsed.report.columns == {"user": "who", "item": "what", "rating": "stars"}
    assert parsed.dataset.ratings.tolist() == [1.0, 2.0]
    problem = only_problem(refused(text, columns={"user": "nobody", "item": "what", "rating": "stars"}))
    assert problem.row == 1 and "no column 'nobody' for user" in problem.message and "'who'" in problem.message


def test_declared_scale_wins_over_the_guess():
    parsed = parse_upload(b"user,item,rating\n1,1,7\n2,1,10\n", scale=(1, 10))
    assert parsed.dataset.rating_scale == (1.0, 10.0) and parsed.report.scale_inferred is False


def test_utf8_bom_and_latin1_when_asked():
    parsed = parse_upload("\ufeffuserId,movieId,rating\n1,2,3\n".encode("utf-8"))
    assert parsed.report.columns["user"] == "userId"
    latin = "user,item,rating\nJosé,Amélie,4\n".encode("latin-1")
    assert parse_upload(latin, encoding="latin-1").dataset.user_map.ids.tolist() == ["José"]


# --- duplicates ------------------------------------------------------------------------------------
def test_duplicates_keep_the_latest_timestamp_then_the_last_row():
    text = b"user,item,rating,timestamp\n1,1,2,300\n1,1,5,100\n1,2,1,50\n1,2,3,50\n2,1,4,10\n"
    parsed = parse_upload(text)
    frame = parsed.dataset.to_frame()
    assert frame.values.tolist() == [[1, 1, 2.0, 300], [1, 2, 3.0, 50], [2, 1, 4.0, 10]]
    assert parsed.report.duplicates_dropped == 2
    assert "2 duplicate (user, item) rows dropped (kept the latest)" in parsed.report.summary()


def test_duplicates_without_timestamps_keep_the_last_row():
    parsed = parse_upload(b"user,item,rating\na,x,1\na,x,2\na,x,3\n")
    assert parsed.dataset.ratings.tolist() == [3.0] and parsed.report.duplicates_dropped == 2


# --- items file ------------------------------------------------------------------------------------
def test_items_file_titles_genres_and_years():
    ratings = b"user,item,rating\n1,10,4\n1,20,3\n2,30,5\n"
    items = b"movieId,title,genres,year\n10,Heat (1995),Action|Crime,\n20,Casino,(no genres listed),1995\n99,Unrated,Drama,2000\n"
    parsed = parse_upload(ratings, items=items)
    catalogue = parsed.dataset.catalogue
    assert catalogue["title"].tolist() == ["Heat (1995)", "Casino", "Item 30"]
    assert catalogue["genres"].tolist() == [("Action", "Crime"), (), ()]
    assert catalogue["year"].tolist() == [1995, 1995, pd.NA]
    assert (parsed.report.items_untitled, parsed.report.items_unrated) == (1, 1)


def test_items_file_problems_name_row_and_column():
    ratings = b"user,item,rating\n1,10,4\n"
    problem = only_problem(refused(ratings, items=b"id,title\n10,A\n11,B\n10,C\n", items_filename="items.csv"))
    assert (problem.file, problem.row, problem.column) == ("items.csv", 4, "id")
    assert "listed again (first on row 2)" in problem.message
    problem = only_problem(refused(ratings, items=b"id,title,year\n10,A,nineteen\n"))
    assert (problem.row, problem.column) == (2, "year")
    problem = only_problem(refused(ratings, items=b"id,genres\n10,Drama\n"))
    assert "no title column" in problem.message


# --- validation: every message names the row and the column ----------------------------------------
@pytest.mark.parametrize(
    "text, row, column, fragment",
    [
        ("user,item,rating\n1,2,3\n1,3,abc\n", 3, "rating", "'abc' is not a number"),
        ("user,item,rating\n1,2,NaN\n", 2, "rating", "is NaN"),
        ("user,item,rating\n1,2,inf\n", 2, "rating", "not finite"),
        ("user,item,rating\n1,2,\n", 2, "rating", "empty rating"),
        ("user,item,rating\n1,2,3\n,2,3\n", 3, "user", "empty user id"),
        ("user,item,rating\n1,,3\n", 2, "item", "empty item id"),
        ("user,item,rating,timestamp\n1,2,3,yesterday\n", 2, "timestamp", "'yesterday' is neither"),
        ("user,item,rating,timestamp\n1,2,3,5\n1,3,3,soon\n", 3, "timestamp", "'soon' is not a number of seconds"),
        ("user,item,rating\n1,2,3\n\n\n1,3,x\n", 5, "rating", "not a number"),  # blank lines still count
        ("user,item,rating\n1,2,3\n1,3,4,5\n", 3, None, "4 fields where the first row has 3"),
        ("a,b,c\n1,2,3\n", 1, None, "no user column among ['a', 'b', 'c']"),
        ("userId,movieId,stars\n1,2,0\n1,3,12\n", None, "stars", "ratings run from 0 to 12"),
        ("user,item,rating\n1,2," + "9" * 400 + "\n", 2, "rating", "not finite"),
    ],
)
def test_validation_names_row_and_column(text, row, column, fragment):
    error = refused(text.encode(), filename="ratings.csv")
    problem = error.problems[0]
    assert (problem.row, problem.column) == (row, column), error.problems
    assert fragment in problem.message, problem.message
    assert str(error).startswith("ratings.csv refused, nothing imported: ")
    if row is not None:
        assert f"row {row}" in str(error)
    if column is not None:
        assert f"column {column!r}" in str(error)


def test_ratings_outside_the_declared_scale_are_counted():
    error = refused(b"user,item,rating\n1,1,3\n1,2,6\n1,3,0\n1,4,7\n", scale=(1, 5))
    problem = only_problem(error)
    assert (problem.row, problem.column) == (3, "rating")
    assert problem.message == "rating 6 is outside the scale 1-5 (2 more row(s) like this)"


def test_all_problems_are_reported_in_row_order():
    error = refused(b"user,item,rating,timestamp\n1,2,x,5\n,2,3,5\n1,2,3,never\n")
    assert [(p.row, p.column) for p in error.problems] == [(2, "rating"), (3, "user"), (4, "timestamp")]
    assert str(error).count("row ") == 3 and "3 problems:" in str(error)


@pytest.mark.parametrize(
    "data, fragment",
    [
        (b"", "the file is empty"),
        (b"  \n\n \t\n", "the file is empty"),
        (b"userId,movieId,rating\n", "header row but no data rows"),
        (b"userId,movieId,rating\n\n\n", "header row but no data rows"),
        (b"\x00\x01\x02binary", "not a text file (a NUL byte at byte offset 0)"),
        (b"PK\x03\x04\x14\x00\x00\x00", "NUL byte at byte offset 5"),
        ("user,item,rating\n1,2,3\n".encode("utf-16"), "UTF-16"),
        (b"user,item,rating\n1,2,3\x07\n", "control character '\\x07' at byte offset 22"),
        (b"only-one-column\nanother,line\n", "cannot tell the columns apart"),
    ],
)
def test_files_refused_whole(data, fragment):
    assert fragment in str(refused(data))


def test_wrong_encoding_names_the_byte_offset_and_row():
    data = "user,item,rating\n1,2,3\nJosé,2,3\n".encode("latin-1")
    problem = only_problem(refused(data))
    assert problem.row == 3 and "byte 0xe9 at byte offset 26 is not valid utf-8" in problem.message
    assert "encoding='latin-1'" in problem.message


def test_size_limits_for_bytes_and_files(tmp_path):
    text = b"user,item,rating\n" + b"1,2,3\n" * 50
    assert "over the 0.0 MB limit" in str(refused(text, limits=UploadLimits(max_bytes=100)))
    assert "over the 10 row limit" in str(refused(text, limits=UploadLimits(max_rows=10)))
    path = tmp_path / "big.csv"
    path.write_bytes(text)
    assert "big.csv refused" in str(refused(path, limits=UploadLimits(max_bytes=100)))
    assert len(parse_upload(path, limits=UploadLimits(max_rows=50)).dataset) == 1  # all 50 rows are one duplicate pair
    with pytest.raises(ValueError, match="max_rows must be a positive int"):
        UploadLimits(max_rows=0)


def test_missing_file_is_a_clean_refusal(tmp_path):
    assert "cannot read" in str(refused(tmp_path / "absent.csv"))


def test_bad_options_are_value_errors():
    with pytest.raises(ValueError, match="low < high"):
        parse_upload(b"user,item,rating\n1,2,3\n", scale=(5, 1))
    with pytest.raises(ValueError, match="delimiter must be one of"):
        parse_upload(b"user,item,rating\n1,2,3\n", delimiter="x")
    assert "column role must be one of" in str(refused(b"user,item,rating\n1,2,3\n", columns={"owner": "user"}))


def test_option_parsers():
    assert parse_column_mapping("user=userId, item=movieId,rating=3") == {"user": "userId", "item": "movieId", "rating": "3"}
    assert parse_scale("0.5,5") == (0.5, 5.0) and parse_scale("1:10") == (1.0, 10.0)
    for bad in ("user", "owner=x", "user=", ""):
        with pytest.raises(ValueError):
            parse_column_mapping(bad)
    for bad in ("5", "a,b", "5,1", "nan,5", "1,inf"):
        with pytest.raises(ValueError):
            parse_scale(bad)


# --- names, save, list, load -----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["", "  ", "../etc", "a/b", ".hidden", "My-Data", "x" * 65, "ml-100k", "ML-1M", "synthetic",
                                  "ml-10m100k", "a b", "naïve", "a\x00b", 5])  # fmt: skip
def test_unsafe_or_reserved_names_are_refused(name):
    with pytest.raises(ValueError):
        validate_upload_name(name)


def test_folders_follow_the_environment(tmp_path, monkeypatch):
    assert uploads_dir() == tmp_path / "uploads"
    monkeypatch.delenv(UPLOADS_DIR_ENV)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert uploads_dir() == tmp_path / "xdg" / "recengine" / "uploads" and user_data_dir() == tmp_path / "xdg" / "recengine"


def test_save_load_round_trip_is_exact(tmp_path):
    ratings = b"user,item,rating,timestamp\nann,10,4.5,100\nbob,20,3,200\nann,20,1,300\n"
    items = "item,title,genres\n10,Amélie (2001),Comedy|Romance\n20,Heat (1995),Action\n".encode()
    info, report = import_upload(ratings, "my-data", items=items)
    assert info.name == "my-data" and info.path == uploads_dir() / "my-data" and info.n_ratings == 3
    assert "3 ratings from 2 users on 2 items" in info.description
    loaded = load_upload("my-data")
    original = parse_upload(ratings, name="my-data", items=items).dataset
    for field in ("users", "items", "ratings", "timestamps"):
        assert np.array_equal(getattr(loaded, field), getattr(original, field)) and getattr(loaded, field).dtype == getattr(original, field).dtype
    assert loaded.user_map.ids.tolist() == ["ann", "bob"] and loaded.item_map.ids.tolist() == [10, 20]
    pd.testing.assert_frame_equal(loaded.catalogue, original.catalogue)
    assert loaded.rating_scale == (0.5, 5.0) and loaded.name == "my-data"
    assert [u.name for u in list_uploads()] == ["my-data"] and upload_names() == ["my-data"]
    assert is_upload("my-data") and not is_upload("other") and not is_upload("../x")


def test_existing_upload_needs_overwrite_and_delete_removes_it():
    import_upload(b"user,item,rating\n1,1,3\n", "mine")
    with pytest.raises(UploadError, match="already exists"):
        import_upload(b"user,item,rating\n1,1,4\n", "mine")
    first = upload_fingerprint("mine")
    import_upload(b"user,item,rating\n1,1,4\n2,1,5\n", "mine", overwrite=True)
    assert load_upload("mine").ratings.tolist() == [4.0, 5.0]
    assert len(first) == 16 and upload_fingerprint("mine") not in ("", first)  # the store retrains on it
    assert upload_fingerprint("ml-100k") == "" and upload_fingerprint("../x") == ""
    delete_upload("mine")
    assert list_uploads() == []
    with pytest.raises(FileNotFoundError, match="no upload called 'mine'"):
        load_upload("mine")
    with pytest.raises(FileNotFoundError):
        delete_upload("mine")


def test_refused_upload_saves_nothing():
    with pytest.raises(UploadError):
        import_upload(b"user,item,rating\n1,1,x\n", "broken")
    assert list_uploads() == [] and not (uploads_dir() / "broken").exists()


def test_crash_while_saving_keeps_the_previous_upload(monkeypatch):
    import_upload(b"user,item,rating\n1,1,3\n", "mine")
    parsed = parse_upload(b"user,item,rating\n1,1,5\n2,2,5\n", name="mine")

    def crash(*args, **kwargs):
        raise OSError("disk full (simulated)")

    savez = np.savez
    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="simulated"):
        save_upload(parsed, "mine", overwrite=True)
    monkeypatch.setattr(np, "savez", savez)
    assert load_upload("mine").ratings.tolist() == [3.0]
    assert sorted(p.name for p in uploads_dir().iterdir()) == ["mine"]  # no staging folder left behind


@pytest.mark.parametrize("damage", ["truncate", "flip", "manifest"])
def test_damaged_upload_is_detected_with_the_fix(damage):
    info, _ = import_upload(b"user,item,rating\n1,1,3\n2,1,4\n", "mine")
    data_file = info.path / "ratings.npz"
    content = bytearray(data_file.read_bytes())
    if damage == "truncate":
        data_file.write_bytes(content[: len(content) // 2])
    elif damage == "flip":
        content[len(content) // 2] ^= 0xFF
        data_file.write_bytes(bytes(content))
    else:
        (info.path / "manifest.json").write_text("{not json")
    with pytest.raises(UploadError, match="import it again with `python -m recengine import FILE --name mine --force`"):
        load_upload("mine")
    if damage == "manifest":
        assert list_uploads() == []


# --- properties and fuzzing ------------------------------------------------------------------------
rows = st.lists(
    st.tuples(st.integers(1, 6), st.integers(1, 8), st.integers(1, 10).map(lambda x: x / 2), st.integers(0, 5)),
    min_size=1, max_size=30,
)  # fmt: skip


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=rows, delimiter=st.sampled_from([",", "\t", ";"]), header=st.booleans())
def test_any_valid_ratings_frame_round_trips_through_csv(rows, delimiter, header):
    frame = pd.DataFrame(rows, columns=["userId", "movieId", "rating", "timestamp"])
    buffer = io.StringIO()
    frame.to_csv(buffer, sep=delimiter, index=False, header=header)
    parsed = parse_upload(buffer.getvalue().encode())
    # expected: the latest per (user, item), ties to the last row, in file order
    ordered = frame.reset_index().sort_values(["timestamp", "index"], kind="stable")
    expected = ordered.drop_duplicates(["userId", "movieId"], keep="last").sort_values("index")
    got = parsed.dataset.to_frame()
    assert got["user_id"].tolist() == expected["userId"].tolist()
    assert got["item_id"].tolist() == expected["movieId"].tolist()
    assert got["rating"].tolist() == expected["rating"].tolist()
    assert got["timestamp"].tolist() == expected["timestamp"].tolist()
    assert parsed.report.duplicates_dropped == len(frame) - len(expected)
    assert parsed.dataset.rating_scale in ((0.5, 5.0), (1.0, 5.0))


def test_fuzzed_uploads_are_accepted_whole_or_refused_cleanly():
    rng = np.random.default_rng(6)
    seed = b"userId,movieId,rating,timestamp\n1,10,4,100\n1,20,3.5,200\n2,10,5,300\n3,30,1,400\n"
    alphabet = np.frombuffer(b",;\t\n\r\"' .-+e0123456789abcNnIi\x00\xff\xc3\xa9", dtype=np.uint8)
    accepted = refused_count = 0
    for _ in range(300):
        data = bytearray(seed)
        for _ in range(int(rng.integers(1, 4))):
            kind = rng.integers(0, 4)
            at = int(rng.integers(0, len(data) + 1))
            if kind == 0 and data:  # replace a byte
                data[min(at, len(data) - 1)] = int(rng.choice(alphabet))
            elif kind == 1:  # insert bytes
                data[at:at] = bytes(rng.choice(alphabet, size=int(rng.integers(1, 4))).tolist())
            elif kind == 2:  # delete a run
                del data[at : at + int(rng.integers(1, 6))]
            else:  # truncate
                del data[at:]
        try:
            parsed = parse_upload(bytes(data), scale=(0.5, 5))
        except UploadError as error:
            assert error.problems and str(error)
            refused_count += 1
            continue
        dataset = parsed.dataset
        assert len(dataset) > 0 and len(dataset) == parsed.report.n_ratings
        assert np.isfinite(dataset.ratings).all() and dataset.ratings.min() >= 0.5 and dataset.ratings.max() <= 5
        assert dataset.users.max() < dataset.n_users and dataset.items.max() < dataset.n_items
        accepted += 1
    assert accepted >= 10 and refused_count >= 10  # the loop explored both outcomes


# --- real data -------------------------------------------------------------------------------------
def test_ml_latest_small_uploaded_equals_the_release_loader():
    folder = require_release("ml-latest-small")
    parsed = parse_upload(folder / "ratings.csv", items=folder / "movies.csv", name="small")
    release = movielens.load_movielens(folder, "ml-latest-small")
    data = parsed.dataset
    assert data.rating_scale == release.rating_scale == (0.5, 5.0)
    for field in ("users", "items", "ratings", "timestamps"):
        assert np.array_equal(getattr(data, field), getattr(release, field)), field
    assert np.array_equal(data.item_map.ids, release.item_map.ids)
    assert data.catalogue["title"].tolist() == release.catalogue["title"].str.strip().tolist()  # cells are trimmed
    assert data.catalogue["genres"].tolist() == release.catalogue["genres"].tolist()
    assert parsed.report.duplicates_dropped == 0 and parsed.report.items_untitled == 0


def test_preview_shows_the_first_rows_by_file_row_and_the_guessed_columns():
    data = b"userId,movieId,rating,timestamp\n" + b"".join(b"%d,%d,4,100%d\n" % (u, u + 10, u) for u in range(1, 12))
    preview = preview_upload(data, "r.csv", rows=3)
    assert preview.columns == ["userId", "movieId", "rating", "timestamp"]
    assert preview.guessed == {"user": "userId", "item": "movieId", "rating": "rating", "timestamp": "timestamp"}
    assert preview.rows.index.tolist() == [2, 3, 4]  # the header is row 1
    assert preview.rows["movieId"].astype(str).tolist() == ["11", "12", "13"]
    with pytest.raises(UploadError, match="empty"):
        preview_upload(b"", "r.csv")
