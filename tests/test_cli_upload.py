"""The `import` and `profiles` commands, in-process through `main(argv)`: output, files and every error path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from recengine.cli import main
from recengine.data.upload import UPLOADS_DIR_ENV, list_uploads, load_upload
from recengine.profiles import PROFILES_DB_ENV, ProfileStore

REPO = Path(__file__).resolve().parents[1]
RATINGS = "userId,movieId,rating,timestamp\n1,10,4,100\n1,20,3,200\n2,10,5,300\n2,10,2,50\n3,30,1,400\n"
ITEMS = "movieId,title,genres\n10,Heat (1995),Action|Crime\n20,Casino (1995),Drama\n30,Amélie (2001),Comedy\n"


@pytest.fixture(autouse=True)
def _user_data(tmp_path, monkeypatch):
    monkeypatch.setenv(UPLOADS_DIR_ENV, str(tmp_path / "uploads"))
    monkeypatch.setenv(PROFILES_DB_ENV, str(tmp_path / "profiles.sqlite3"))


@pytest.fixture
def files(tmp_path) -> tuple[Path, Path]:
    ratings, items = tmp_path / "ratings.csv", tmp_path / "items.csv"
    ratings.write_text(RATINGS)
    items.write_text(ITEMS)
    return ratings, items


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_refused(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"


# --- import ----------------------------------------------------------------------------------------
def test_import_saves_a_named_dataset(capsys, files):
    ratings, items = files
    code, out, err = run(capsys, "import", ratings, "--name", "my-data", "--items", items)
    assert code == 0, err
    assert out.startswith("imported 'my-data': 4 ratings from 3 users on 3 items, scale 1-5 (inferred); "
                          "1 duplicate (user, item) rows dropped (kept the latest)")  # fmt: skip
    assert "train --dataset my-data" in out
    dataset = load_upload("my-data")
    assert dataset.titles([0, 2]) == ["Heat (1995)", "Amélie (2001)"]
    assert dataset.to_frame().query("user_id == 2")["rating"].tolist() == [5.0]  # the latest of the two


def test_import_options_and_json_report(capsys, tmp_path):
    path = tmp_path / "scores.tsv"
    path.write_text("who\twhat\tpoints\nann\tx\t7\nbob\tx\t10\n")
    code, out, err = run(capsys, "import", path, "--name", "scores", "--columns", "user=who,item=2,rating=points",
                         "--scale", "1,10", "--delimiter", "tab", "--json")  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    assert report["name"] == "scores" and report["rating_scale"] == [1.0, 10.0] and report["scale_inferred"] is False
    assert report["columns"] == {"user": "who", "item": "what", "rating": "points"} and report["n_ratings"] == 2


def test_import_latin1_only_when_asked(capsys, tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("user,item,rating\nJosé,1,4\n".encode("latin-1"))
    assert_refused(*run(capsys, "import", path, "--name", "latin")[::2], "row 2", "byte offset 20", "--encoding latin-1")
    code, _, err = run(capsys, "import", path, "--name", "latin", "--encoding", "latin-1")
    assert code == 0, err
    assert load_upload("latin").user_map.ids.tolist() == ["José"]


def test_import_replaces_only_with_force(capsys, files):
    ratings, _ = files
    assert run(capsys, "import", ratings, "--name", "mine")[0] == 0
    assert_refused(*run(capsys, "import", ratings, "--name", "mine")[::2], "already exists", "--force")
    assert run(capsys, "import", ratings, "--name", "mine", "--force")[0] == 0


@pytest.mark.parametrize(
    "content, args, fragments",
    [
        ("user,item,rating\n1,2,3\n1,3,abc\n", [], ["ratings.csv refused", "row 3, column 'rating'", "'abc' is not a number"]),
        ("user,item,rating\n1,2,9\n", ["--scale", "1,5"], ["row 2, column 'rating'", "outside the scale 1-5"]),
        ("user,item,rating\n", [], ["header row but no data rows"]),
        ("", [], ["the file is empty"]),
        ("a,b,c\n1,2,3\n", [], ["no user column", "--columns user=NAME"]),
        ("user,item,rating\n1,2,3\n", ["--scale", "five"], ["scale must be two numbers"]),
        ("user,item,rating\n1,2,3\n", ["--scale", "5,1"], ["low < high"]),
        ("user,item,rating\n1,2,3\n", ["--columns", "owner=x"], ["column role must be one of"]),
        ("user,item,rating\n1,2,3\n", ["--encoding", "klingon"], ["unknown encoding 'klingon'"]),
    ],
)
def test_import_refusals_are_one_line(capsys, tmp_path, content, args, fragments):
    path = tmp_path / "ratings.csv"
    path.write_text(content)
    code, out, err = run(capsys, "import", path, "--name", "mine", *args)
    assert_refused(code, err, *fragments)
    assert out == "" and list_uploads() == []


@pytest.mark.parametrize("name", ["../../etc/passwd", "", "   ", "x" * 10_000, "🎬", "a\x1bb", "ml-100k", "DROP TABLE;--"])
def test_import_refuses_hostile_names(capsys, files, name):
    assert_refused(*run(capsys, "import", files[0], "--name", name)[::2], "not allowed" if name != "ml-100k" else "built-in")


def test_import_of_a_missing_or_binary_file(capsys, tmp_path):
    assert_refused(*run(capsys, "import", tmp_path / "absent.csv", "--name", "x")[::2], "cannot read")
    (tmp_path / "blob.csv").write_bytes(bytes(range(256)))
    assert_refused(*run(capsys, "import", tmp_path / "blob.csv", "--name", "x")[::2], "not a text file")


def test_module_entry_point_exits_2_without_a_traceback(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("user,item,rating\n1,2,NaN\n")
    env = {"PATH": "/usr/bin:/bin", UPLOADS_DIR_ENV: str(tmp_path / "up"), "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "recengine", "import", str(path), "--name", "x"],
                            cwd=REPO, capture_output=True, text=True, timeout=120, env=env)  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == ["error: bad.csv refused, nothing imported: row 2, column 'rating': rating 'NaN' is NaN, not a number"]


# --- profiles --------------------------------------------------------------------------------------
@pytest.fixture
def saved(capsys, files):
    """An upload "tiny" with titles and a profile "Zoë 🎬" on it."""
    ratings, items = files
    assert run(capsys, "import", ratings, "--name", "tiny", "--items", items)[0] == 0
    store = ProfileStore()
    profile = store.create("Zoë 🎬", "tiny")
    store.rate(profile, 20, 4.5, at=1000.0)
    store.rate(profile, 10, 2, at=2000.0)
    store.skip(profile, 30)
    return store, profile


def test_profiles_list_and_show(capsys, saved):
    code, out, _ = run(capsys, "profiles", "list")
    assert code == 0 and out.splitlines()[0].split() == ["profile", "dataset", "ratings", "skipped", "changed"]
    assert out.splitlines()[2].split()[:5] == ["Zoë", "🎬", "tiny", "2", "1"]
    code, out, _ = run(capsys, "profiles", "list", "--json")
    assert [(p["name"], p["n_ratings"], p["n_skipped"]) for p in json.loads(out)] == [("Zoë 🎬", 2, 1)]
    assert run(capsys, "profiles", "list", "--dataset", "other")[1] == "no saved profiles on other\n"
    code, out, _ = run(capsys, "profiles", "show", "zoë 🎬")  # any case; the only dataset with that name
    assert code == 0 and out.startswith("profile 'Zoë 🎬' on tiny: 2 rating(s), 1 skipped")
    rows = [line.split(None, 3) for line in out.splitlines()[4:]]
    assert rows == [["1", "20", "4.5", "Casino (1995)"], ["2", "10", "2", "Heat (1995)"]]
    shown = json.loads(run(capsys, "profiles", "show", "Zoë 🎬", "--dataset", "tiny", "--json")[1])
    assert [(r["item_id"], r["rating"]) for r in shown["ratings"]] == [(20, 4.5), (10, 2.0)] and shown["skipped"] == [30]


def test_profiles_export_import_link_delete(capsys, saved, tmp_path):
    store, profile = saved
    for suffix in ("json", "csv"):
        out_file = tmp_path / f"zoe.{suffix}"
        code, out, err = run(capsys, "profiles", "export", "Zoë 🎬", "--out", out_file)
        assert code == 0 and out.startswith("exported profile 'Zoë 🎬' (2 rating(s)) to"), err
    assert json.loads((tmp_path / "zoe.json").read_text())["ratings"][0]["title"] == "Casino (1995)"
    code, out, err = run(capsys, "profiles", "import", tmp_path / "zoe.json", "--name", "copy")
    assert code == 0 and out == "imported profile 'copy' on tiny: 2 rating(s), 1 skipped\n", err
    code, out, err = run(capsys, "profiles", "import", tmp_path / "zoe.csv", "--name", "from csv", "--dataset", "tiny")
    assert code == 0 and "2 rating(s), 0 skipped" in out, err
    assert store.load(store.find("from csv", "tiny")).ratings == store.load(profile).ratings
    assert run(capsys, "profiles", "link", "copy")[1] == "dataset=tiny&r=20:4.5,10:2&name=copy\n"
    code, out, _ = run(capsys, "profiles", "delete", "copy", "--dataset", "tiny")
    assert code == 0 and out == "deleted profile 'copy' on tiny (2 rating(s))\n"
    assert [p.name for p in store.list_profiles()] == ["from csv", "Zoë 🎬"]


def test_profiles_import_refusals(capsys, saved, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "recengine-profile", "version": 1, "name": "x", "dataset": "tiny",
                               "ratings": [{"item_id": 10, "rating": 4}, {"item_id": 999, "rating": 3}]}))  # fmt: skip
    assert_refused(*run(capsys, "profiles", "import", bad)[::2], "1 item id(s) are not in tiny: 999")
    bad.write_text('{"format": "recengine-profile", "version": 1, "name": "x", "dataset": "tiny", "ratings": [{"item_id": 1, "rating": NaN}]}')
    assert_refused(*run(capsys, "profiles", "import", bad)[::2], "NaN is not a valid number")
    bad.write_text("{broken")
    assert_refused(*run(capsys, "profiles", "import", bad)[::2], "not valid JSON")
    csv_file = tmp_path / "p.csv"
    csv_file.write_text("item_id,rating\n10,7\n")
    assert_refused(*run(capsys, "profiles", "import", csv_file)[::2], "needs --dataset")
    assert_refused(*run(capsys, "profiles", "import", csv_file, "--dataset", "tiny", "--name", "p")[::2], "row 2, column 'rating'")
    assert_refused(*run(capsys, "profiles", "import", csv_file, "--dataset", "../../etc/passwd", "--name", "p")[::2], "unknown dataset")
    good = tmp_path / "good.json"
    run(capsys, "profiles", "export", "Zoë 🎬", "--out", good)
    assert_refused(*run(capsys, "profiles", "import", good)[::2], "already exists")


@pytest.mark.parametrize("name", ["nobody", "x" * 10_000, "", "a\x00b", "../../etc/passwd", "' OR 1=1 --"])
def test_profiles_unknown_or_hostile_names(capsys, saved, name):
    code, _, err = run(capsys, "profiles", "show", name)
    assert_refused(code, err)


def test_profiles_ambiguous_name_needs_the_dataset(capsys, saved):
    store, _ = saved
    store.create("zoë 🎬", "synthetic")
    assert_refused(*run(capsys, "profiles", "show", "Zoë 🎬")[::2], "exists on synthetic, tiny; pass --dataset")
    assert run(capsys, "profiles", "delete", "Zoë 🎬", "--dataset", "synthetic")[0] == 0


def test_profiles_on_a_damaged_database(capsys, tmp_path):
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"\x00garbage" * 200)
    assert_refused(*run(capsys, "profiles", "list", "--db", junk)[::2], "not a usable profiles database")


def test_profiles_export_to_an_unsupported_format(capsys, saved, tmp_path):
    assert_refused(*run(capsys, "profiles", "export", "Zoë 🎬", "--out", tmp_path / "p.xml")[::2], "format must be 'json' or 'csv'")
