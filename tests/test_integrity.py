"""Damaged or hostile files: model artefacts, MovieLens release files, crash-safe writes.

- A truncated, corrupted or foreign artefact in the models folder is detected, warned about
  (naming the file), and retrained by the store; a pickle payload in weights.pt is never run
  (its `__reduce__` would create a marker file, which must never appear).
- A release file that is truncated or altered is refused on load against its record (the
  official files' sizes and sha256 in `KNOWN_FILES`, or the manifest written at download time),
  with the fix in the message.
- Artefacts and the binary parse cache are written atomically: a write that fails half-way
  (monkeypatched) or a process killed with SIGKILL mid-write leaves the previous good file.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import real_data_dir
from recengine.cli import main
from recengine.data import movielens
from recengine.data.dataset import Dataset, IdMap
from recengine.data.movielens import CACHE_FILENAME, DatasetIntegrityError, load_dataset, load_movielens, verify_release
from recengine.models.base import ArtefactError, Recommender
from recengine.store import ModelStore

REPO = Path(__file__).resolve().parents[1]
#: Read at import: the autouse fixture of conftest does not touch it, but tests below may.
REAL_DATA = real_data_dir()
TINY_MF = {"epochs": 2, "embedding_dim": 4, "batch_size": 64}


# --- helpers ------------------------------------------------------------------------------------
def tiny_dataset(seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    pairs = rng.choice(12 * 8, size=60, replace=False)
    return Dataset.from_arrays(
        "tiny", pairs // 8, pairs % 8, rng.integers(1, 6, size=60).astype(np.float32),
        user_map=IdMap(np.arange(1, 13)), item_map=IdMap(np.arange(101, 109)), rating_scale=(1.0, 5.0),
    )  # fmt: skip


def fresh_store(root: Path) -> ModelStore:
    return ModelStore(root, device="cpu", datasets={"tiny": tiny_dataset()})


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def reseal(folder: Path) -> None:
    """Rewrite meta.json's checksums to match the files as they are now: the attacker who can
    write the folder can also fix the checksums, so what follows must not rely on them."""
    meta = json.loads((folder / "meta.json").read_text())
    meta["sha256"] = {name: sha256(folder / name) for name in meta["sha256"]}
    (folder / "meta.json").write_text(json.dumps(meta))


class Payload:
    """Unpickling this creates `marker`: proof that code in the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.fixture(scope="module")
def good_artefact(tmp_path_factory) -> tuple[Path, str, np.ndarray]:
    """(models folder with one trained tiny MF, its slug, its predictions) — trained once for the module."""
    root = tmp_path_factory.mktemp("good-models")
    store = fresh_store(root)
    key = store.key("tiny", "mf", hyper=TINY_MF)
    model = store.get_or_train(key)
    return root, key.slug, model.predict(np.arange(12) % 12, np.arange(12) % 8)


@pytest.fixture
def models(tmp_path, good_artefact) -> tuple[ModelStore, Path]:
    """A fresh store on a private copy of the good artefact, and the artefact's folder."""
    root, slug, _ = good_artefact
    shutil.copytree(root, tmp_path / "models")
    return fresh_store(tmp_path / "models"), tmp_path / "models" / slug


def assert_rejected_and_retrained(store: ModelStore, folder: Path, caplog, file_name: str) -> None:
    """The store warns about `folder` naming `file_name`, returns None, then retrains a good folder."""
    key = store.key("tiny", "mf", hyper=TINY_MF)
    assert store.path(key) == folder
    with caplog.at_level(logging.WARNING, logger="recengine.store"), pytest.warns(RuntimeWarning, match="retrained"):
        assert store.get(key) is None
    messages = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert any(str(folder) in message and file_name in message for message in messages), messages
    with pytest.warns(RuntimeWarning):
        model = store.get_or_train(key)
    assert model.is_fitted
    assert Recommender.load(folder, device="cpu").config == key.config  # the folder is good again


# --- damaged and hostile artefacts ---------------------------------------------------------------

def kill_mid_write(script: str, target: str, tmp_path: Path) -> None:
    """Run `script` (argv: target, ready-file) in a child process and SIGKILL it once it has
    created the ready file, i.e. in the middle of its write."""
    ready = tmp_path / "ready"
    child = subprocess.Popen(
        [sys.executable, "-c", script, target, str(ready)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "the child never reached the middle of the write"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL

def test_the_good_artefact_loads_without_a_warning(models, good_artefact, recwarn):
    store, folder = models
    model = store.get(store.key("tiny", "mf", hyper=TINY_MF))
    np.testing.assert_array_equal(model.predict(np.arange(12) % 12, np.arange(12) % 8), good_artefact[2])
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("how", ["torch.save", "plain pickle"])
def test_a_pickle_payload_in_weights_is_never_run(models, tmp_path, caplog, how):
    store, folder = models
    marker, control = tmp_path / "pwned", tmp_path / "control"
    assert pickle.loads(pickle.dumps(Payload(control))) is None and control.exists()  # the payload is live
    weights = folder / "weights.pt"
    if how == "torch.save":
        torch.save({"factors": Payload(marker)}, weights)
    else:
        weights.write_bytes(pickle.dumps({"factors": Payload(marker)}))
    reseal(folder)  # checksums match: only weights_only=True stands between the file and the code

    with pytest.raises(ArtefactError, match="weights"):
        Recommender.load(folder, device="cpu")
    assert_rejected_and_retrained(store, folder, caplog, "weights")
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncate", "flip a byte", "wrong checksum in meta.json"])
def test_damaged_weights_are_reported_by_name_and_retrained(models, caplog, damage):
    store, folder = models
    weights = folder / "weights.pt"
    data = bytearray(weights.read_bytes())
    if damage == "truncate":
        weights.write_bytes(bytes(data[: len(data) // 2]))
    elif damage == "flip a byte":
        data[len(data) // 2] ^= 0x01
        weights.write_bytes(bytes(data))
    else:
        meta = json.loads((folder / "meta.json").read_text())
        meta["sha256"]["weights.pt"] = "0" * 64
        (folder / "meta.json").write_text(json.dumps(meta))
    assert_rejected_and_retrained(store, folder, caplog, "weights.pt")


def test_weights_of_another_model_are_refused_even_with_matching_checksums(models, tmp_path, caplog):
    store, folder = models
    other_store = fresh_store(tmp_path / "other")
    other_key = other_store.key("tiny", "als", hyper={"iterations": 2, "factors": 3})
    assert other_store.get_or_train(other_key).is_fitted
    shutil.copyfile(other_store.path(other_key) / "weights.pt", folder / "weights.pt")
    reseal(folder)
    assert_rejected_and_retrained(store, folder, caplog, "weights")


def test_weights_of_the_same_family_with_other_shapes_are_refused(models, tmp_path, caplog):
    store, folder = models
    other_store = fresh_store(tmp_path / "other")
    other_key = other_store.key("tiny", "mf", hyper={**TINY_MF, "embedding_dim": 7})
    other_store.get_or_train(other_key)
    shutil.copyfile(other_store.path(other_key) / "weights.pt", folder / "weights.pt")
    reseal(folder)
    assert_rejected_and_retrained(store, folder, caplog, "")


def test_a_weights_symlink_pointing_elsewhere_is_refused(models, tmp_path, caplog):
    store, folder = models
    elsewhere = tmp_path / "elsewhere.pt"
    elsewhere.write_bytes(b"\x00" * 64)
    (folder / "weights.pt").unlink()
    (folder / "weights.pt").symlink_to(elsewhere)
    assert_rejected_and_retrained(store, folder, caplog, "weights.pt")
    assert not (folder / "weights.pt").is_symlink() and elsewhere.read_bytes() == b"\x00" * 64  # never written through


def test_a_symlink_to_identical_content_outside_the_folder_is_still_refused(models, tmp_path):
    _, folder = models
    outside = tmp_path / "outside.pt"
    shutil.copyfile(folder / "weights.pt", outside)
    (folder / "weights.pt").unlink()
    (folder / "weights.pt").symlink_to(outside)
    with pytest.raises(ArtefactError):
        Recommender.load(folder, device="cpu")


@pytest.mark.parametrize(
    "meta_text",
    [
        "",
        "{not json",
        "[]",
        '{"sha256": "abc"}',
        "\x00" * 32,
    ],
    ids=["empty", "broken", "list", "bad-sha", "nul"],
)
def test_unreadable_meta_json_is_reported_and_retrained(models, caplog, meta_text):
    store, folder = models
    (folder / "meta.json").write_text(meta_text)
    key = store.key("tiny", "mf", hyper=TINY_MF)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert store.get(key) is None
        assert store.get_or_train(key).is_fitted
    assert any("meta.json" in str(w.message) and "retrained" in str(w.message) for w in caught), caught


@pytest.mark.parametrize(
    "damage",
    ["config-not-an-object", "unknown-family", "history-not-a-list", "history-entry-missing-keys", "sha256-of-numbers"],
)
def test_well_formed_json_of_the_wrong_shape_is_an_artefact_error(models, damage):
    """Valid JSON with checksums that match (resealed) but the wrong structure never escapes as
    AttributeError/KeyError/ValueError: the store catches ArtefactError only."""
    store, folder = models
    if damage == "config-not-an-object":
        (folder / "config.json").write_text("[1, 2]")
    elif damage == "unknown-family":
        header = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**header, "model": "x" * 5000}))
    reseal(folder)
    meta = json.loads((folder / "meta.json").read_text())
    if damage == "history-not-a-list":
        meta["history"] = 5
    elif damage == "history-entry-missing-keys":
        meta["history"] = [{"epoch": 1}]
    elif damage == "sha256-of-numbers":
        meta["sha256"] = {name: 1 for name in meta["sha256"]}
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ArtefactError) as caught:
        Recommender.load(folder, device="cpu")
    assert len(str(caught.value)) < 400 + len(str(folder))
    with pytest.warns(RuntimeWarning, match="retrained"):
        assert store.get(store.key("tiny", "mf", hyper=TINY_MF)) is None


def test_a_symlinked_artefact_folder_or_meta_json_is_refused(models, tmp_path):
    _, folder = models
    real = tmp_path / "real-folder"
    shutil.copytree(folder, real)
    shutil.rmtree(folder)
    folder.symlink_to(real, target_is_directory=True)
    with pytest.raises(ArtefactError, match="symbolic link"):
        Recommender.load(folder, device="cpu")
    folder.unlink()
    shutil.copytree(real, folder)
    (folder / "meta.json").unlink()
    (folder / "meta.json").symlink_to(real / "meta.json")
    with pytest.raises(ArtefactError, match="meta.json is a symbolic link"):
        Recommender.load(folder, device="cpu")


def test_config_json_claiming_another_family_is_refused(models, caplog):
    store, folder = models
    header = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**header, "model": "als"}))
    reseal(folder)
    assert_rejected_and_retrained(store, folder, caplog, "")


# --- crash-safe artefact writes -----------------------------------------------------------------
def test_a_save_that_fails_half_way_leaves_the_previous_artefact(models, good_artefact, monkeypatch):
    store, folder = models
    model = Recommender.load(folder, device="cpu")
    before = {path.name: path.read_bytes() for path in folder.iterdir()}

    real_save = torch.save

    def half_then_fail(obj, target, *args, **kwargs):
        real_save(obj, target, *args, **kwargs)
        Path(target).write_bytes(Path(target).read_bytes()[:100])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", half_then_fail)
    with pytest.raises(OSError, match="No space"):
        model.save(folder)
    monkeypatch.undo()

    def failing_replace(src, dst):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="Input/output"):
        model.save(folder)
    monkeypatch.undo()

    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before
    assert not [p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}")]  # no staging left
    reloaded = Recommender.load(folder, device="cpu")
    np.testing.assert_array_equal(reloaded.predict(np.arange(12) % 12, np.arange(12) % 8), good_artefact[2])


_KILLED_SAVE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import numpy as np
    from recengine.models.base import Recommender

    folder, ready = Path(sys.argv[1]), Path(sys.argv[2])
    model = Recommender.load(folder, device="cpu")
    real_savez = np.savez

    def stall(target, *args, **kwargs):  # weights.pt is written; stop in the middle of the folder
        Path(target).write_bytes(b"PK half an npz")
        ready.touch()
        time.sleep(60)

    np.savez = stall
    model.save(folder)
    """
)


def test_a_save_killed_mid_write_leaves_the_previous_artefact(models, good_artefact, tmp_path):
    store, folder = models
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    kill_mid_write(_KILLED_SAVE, str(folder), tmp_path)

    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before
    key = store.key("tiny", "mf", hyper=TINY_MF)
    model = store.get(key)
    np.testing.assert_array_equal(model.predict(np.arange(12) % 12, np.arange(12) % 8), good_artefact[2])
    # the half-built staging folder stays (hidden) and is never listed as a model
    assert [info.path for info in store.artefacts()] == [folder]
    # ... until a store starts when it is over an hour old: then it is swept
    [staging] = [path for path in folder.parent.iterdir() if path.name.startswith(f".{folder.name}.")]
    fresh_store(folder.parent)
    assert staging.is_dir()  # too young: a save may still be writing it
    an_hour_ago = time.time() - 3700
    os.utime(staging, (an_hour_ago, an_hour_ago))
    fresh_store(folder.parent)
    assert not staging.exists() and (folder / "meta.json").is_file()


# --- release files against their record -----------------------------------------------------------
def real_copy(tmp_path: Path, name: str) -> Path:
    """A writable copy of a real release under tmp_path/<name> (skips when it is absent)."""
    if REAL_DATA is None or not (REAL_DATA / name).is_dir():
        pytest.skip(f"{name} not available (set RECENGINE_DATA_DIR)")
    target = tmp_path / name
    shutil.copytree(REAL_DATA / name, target)
    for path in target.iterdir():
        path.chmod(0o644)
    return target


def flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] = ord("7") if data[len(data) // 2] != ord("7") else ord("8")
    path.write_bytes(bytes(data))


def test_known_files_table_matches_the_real_releases():
    if REAL_DATA is None:
        pytest.skip("real MovieLens data not available (set RECENGINE_DATA_DIR)")
    for name, files in movielens.KNOWN_FILES.items():
        folder = REAL_DATA / name
        if not folder.is_dir():
            continue
        for file, (size, digest) in files.items():
            assert (folder / file).stat().st_size == size and sha256(folder / file) == digest, file
        assert verify_release(folder, name) is True


@pytest.mark.parametrize(
    ("name", "file", "damage", "fragment"),
    [
        ("ml-100k", "u.data", "truncate", "truncated"),
        ("ml-100k", "u.item", "flip", "altered"),
        ("ml-100k", "u1.base", "flip", "altered"),  # the canonical folds are checked too
        ("ml-100k", "u.data", "append", "longer"),
        ("ml-latest-small", "ratings.csv", "truncate", "truncated"),
        ("ml-latest-small", "movies.csv", "flip", "altered"),
    ],
)
def test_a_damaged_release_file_is_refused_with_the_fix(tmp_path, monkeypatch, name, file, damage, fragment):
    folder = real_copy(tmp_path, name)
    path = folder / file
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "append":
        with open(path, "ab") as out:
            out.write(b"1\t1\t5\t881250949\n")
    else:
        flip_middle_byte(path)
    monkeypatch.setenv("RECENGINE_DATA_DIR", str(tmp_path))
    with pytest.raises(DatasetIntegrityError, match=fragment) as raised:
        load_dataset(name)
    message = str(raised.value)
    assert str(path) in message and f"python -m recengine download {name} --force" in message
    assert "\n" not in message  # one line, for the command line's `error:` message


def test_a_damaged_release_is_one_error_line_on_the_command_line(tmp_path, monkeypatch, capsys):
    folder = real_copy(tmp_path, "ml-100k")
    flip_middle_byte(folder / "u.data")
    monkeypatch.setenv("RECENGINE_DATA_DIR", str(tmp_path))
    code = main(["similar", "--dataset", "ml-100k", "toy story", "--models-dir", str(tmp_path / "models")])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1 and "u.data" in captured.err


def test_the_intact_copy_loads_and_a_hand_made_folder_has_no_record(tmp_path):
    folder = real_copy(tmp_path, "ml-100k")
    assert verify_release(folder, "ml-100k") is True
    assert len(load_movielens(folder, "ml-100k")) == 100_000
    (folder / "README").unlink()  # without the official README the folder is not held to the table
    (folder / "u.data").write_bytes(b"1\t1\t5\t881250949\n")
    assert verify_release(folder, "ml-100k") is False
    assert len(load_movielens(folder, "ml-100k")) == 1


# The releases that are not on this machine are checked against the manifest written at
# download time (the zip's MD5 is verified first): a tiny ml-1m served from memory.
class _Response(io.BytesIO):
    status = 200

    def __init__(self, body: bytes) -> None:
        super().__init__(body)
        self.headers = {"Content-Length": str(len(body))}


def write_tiny_1m(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "ratings.dat").write_text("1::10::5::978300760\n1::20::3::978302109\n2::10::4::978301968\n")
    (folder / "movies.dat").write_text("10::Heat (1995)::Action|Crime\n20::Casino (1995)::Drama\n")
    (folder / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    return folder


@pytest.fixture
def downloaded_1m(tmp_path, monkeypatch) -> Path:
    source = write_tiny_1m(tmp_path / "source" / "ml-1m")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(source.iterdir()):
            archive.write(path, f"ml-1m/{path.name}")
    body = buffer.getvalue()
    release = movielens.RELEASES["ml-1m"]
    import dataclasses

    monkeypatch.setitem(
        movielens.RELEASES, "ml-1m", dataclasses.replace(release, zip_bytes=len(body), zip_md5=hashlib.md5(body).hexdigest())
    )
    monkeypatch.setattr(movielens, "_open_url", lambda url, timeout=60.0: _Response(body))
    return movielens.download_dataset("ml-1m", dest=tmp_path / "data")


def test_download_records_a_manifest_and_loads_check_it(downloaded_1m, monkeypatch):
    folder = downloaded_1m
    manifests = list((movielens.cache_dir() / "manifests").iterdir())
    assert len(manifests) == 1
    recorded = json.loads(manifests[0].read_text())["files"]
    assert recorded == {
        path.name: {"bytes": path.stat().st_size, "sha256": sha256(path)} for path in folder.iterdir() if not path.name.startswith(".")
    }
    assert verify_release(folder, "ml-1m") is True
    first = load_movielens(folder, "ml-1m")  # parses (hashing first) and writes the binary cache

    def no_hashing(path):
        raise AssertionError(f"hashed {path} although the verified cache is valid")

    monkeypatch.setattr(movielens, "_file_sha256", no_hashing)
    assert load_movielens(folder, "ml-1m").ratings.tolist() == first.ratings.tolist()  # cache hit: sizes only


def test_a_downloaded_release_altered_in_place_is_refused_past_its_cache(downloaded_1m):
    folder = downloaded_1m
    load_movielens(folder, "ml-1m")
    ratings = folder / "ratings.dat"
    ratings.write_text(ratings.read_text().replace("1::20::3", "1::20::5"))  # same size, new content
    info = ratings.stat()
    os.utime(ratings, ns=(info.st_atime_ns, info.st_mtime_ns + 10**9))
    with pytest.raises(DatasetIntegrityError, match="ratings.dat .*altered"):
        load_movielens(folder, "ml-1m")
    ratings.write_text("1::10::5::978300760\n")
    with pytest.raises(DatasetIntegrityError, match="truncated"):
        load_movielens(folder, "ml-1m")


def test_an_unreadable_manifest_is_ignored_with_a_warning(downloaded_1m):
    manifest = next((movielens.cache_dir() / "manifests").iterdir())
    manifest.write_text('{"format": 1, "release": "ml-1m", "files": {"ratings.dat": {"bytes": "x"}}}')
    with pytest.warns(UserWarning, match="unreadable manifest"):
        assert verify_release(downloaded_1m, "ml-1m") is False
    with pytest.warns(UserWarning, match="unreadable manifest"):
        assert len(load_movielens(downloaded_1m, "ml-1m")) == 3


# --- crash-safe binary cache --------------------------------------------------------------------
def cached_release(tmp_path: Path) -> Path:
    folder = write_tiny_1m(tmp_path / "ml-1m")
    load_movielens(folder, "ml-1m")
    assert (folder / CACHE_FILENAME).is_file()
    return folder


def test_a_cache_write_that_fails_half_way_keeps_the_previous_cache(tmp_path, monkeypatch):
    folder = cached_release(tmp_path)
    good = (folder / CACHE_FILENAME).read_bytes()
    with open(folder / "ratings.dat", "a") as out:
        out.write("3::20::2::978300000\n")  # the cache is stale now and will be rewritten

    def half_then_fail(out, **arrays):
        out.write(b"PK\x03\x04 half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", half_then_fail)
    with pytest.warns(UserWarning, match="could not write the ml-1m parse cache"):
        assert len(load_movielens(folder, "ml-1m")) == 4  # the load itself still works
    monkeypatch.undo()
    assert (folder / CACHE_FILENAME).read_bytes() == good
    assert sorted(p.name for p in folder.iterdir()) == sorted(["movies.dat", "ratings.dat", "users.dat", CACHE_FILENAME])
    assert len(load_movielens(folder, "ml-1m")) == 4  # and the next load rebuilds it


_KILLED_CACHE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import numpy as np
    from recengine.data.movielens import load_movielens

    folder, ready = Path(sys.argv[1]), Path(sys.argv[2])

    def stall(out, **arrays):
        out.write(b"PK\\x03\\x04 half")
        out.flush()
        ready.touch()
        time.sleep(60)

    np.savez = stall
    load_movielens(folder, "ml-1m")
    """
)


def test_a_cache_write_killed_mid_write_keeps_the_previous_cache(tmp_path):
    folder = cached_release(tmp_path)
    good = (folder / CACHE_FILENAME).read_bytes()
    with open(folder / "ratings.dat", "a") as out:
        out.write("3::20::2::978300000\n")
    kill_mid_write(_KILLED_CACHE, str(folder), tmp_path)
    assert (folder / CACHE_FILENAME).read_bytes() == good
    with np.load(folder / CACHE_FILENAME, allow_pickle=False) as stored:
        assert len(stored["ratings"]) == 3
    leftovers = list(folder.glob(f"{CACHE_FILENAME}.*.tmp"))
    assert len(leftovers) == 1  # the killed writer's temporary file, never read as the cache

    assert len(load_movielens(folder, "ml-1m")) == 4  # stale cache detected, rebuilt
    assert leftovers[0].exists()  # a fresh temporary may belong to a live writer: kept
    os.utime(leftovers[0], (time.time() - 7200, time.time() - 7200))
    with open(folder / "ratings.dat", "a") as out:
        out.write("4::20::1::978300001\n")
    assert len(load_movielens(folder, "ml-1m")) == 5
    assert not leftovers[0].exists()  # an hour-old one is swept by the next cache write


# --- crash-safe profile exports -----------------------------------------------------------------------
_KILLED_EXPORT = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from recengine.profiles import ProfileData, Rating, write_profile_file

    path, ready = Path(sys.argv[1]), Path(sys.argv[2])

    def stall(fd):  # the new content is in the temporary file, not yet renamed over the export
        ready.touch()
        time.sleep(60)

    os.fsync = stall
    write_profile_file(ProfileData("me", "ml-100k", (Rating(1, 2.0, 0.0), Rating(3, 5.0, 1.0))), path)
    """
)


def test_a_profile_export_killed_mid_write_keeps_the_previous_file(tmp_path):
    profiles = pytest.importorskip("recengine.profiles")
    path = tmp_path / "me.json"
    profiles.write_profile_file(profiles.ProfileData("me", "ml-100k", (profiles.Rating(1, 4.0, 0.0),)), path)
    good = path.read_bytes()
    kill_mid_write(_KILLED_EXPORT, str(path), tmp_path)
    assert path.read_bytes() == good
    assert profiles.read_profile_file(path).ratings_by_id() == {1: 4.0}
