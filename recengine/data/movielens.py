"""Find, download, verify and parse every MovieLens release into a `Dataset`.

`load_dataset("ml-100k")` is the entry point: it looks for the release on disk
(`find_dataset`), optionally downloads it (`download_dataset`), and parses it
(`load_movielens`), going through a binary parse cache for the large releases.

What a loaded `Dataset` holds, for every release alike:

- users and items get contiguous indices in *sorted raw-id order* (user 0 is the smallest
  `userId`, item 0 the smallest rated `movieId`), so loading is deterministic;
- only movies that have at least one rating become items: a movie listed in `movies.csv`
  (or `u.item`, `movies.dat`) but never rated is left out, because the catalogue has one
  row per item index; a rated movie missing from the movie list gets the title "Item <id>";
- titles keep their original text ("Matrix, The (1999)"); the catalogue adds the display
  title ("The Matrix (1999)"), the year, the genres as a tuple ("(no genres listed)" and
  ml-100k's "unknown" genre become an empty tuple), popularity and mean rating;
- ratings are float32 on the release's scale (`Release.rating_scale`), timestamps int64
  seconds since the epoch, and `source` is the release folder (the canonical ml-100k folds
  u1..u5, ua, ub are read from there by the splits module).

Where data is looked for, in order: `$RECENGINE_DATA_DIR/<name>` (or the zip's inner folder
name, e.g. `ml-10M100K`, or `$RECENGINE_DATA_DIR` itself when it is the release folder), the
project's `data/` folder, then the user cache `$XDG_CACHE_HOME/recengine` (default
`~/.cache/recengine`), where `download_dataset` puts what it fetches.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import io
import json
import os
import re
import shutil
import stat
import tempfile
import threading
import time
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Callable, Literal

import numpy as np
import pandas as pd

from recengine.data.dataset import Dataset, IdMap, make_catalogue, parse_title

__all__ = [
    "CACHE_FILENAME",
    "DATA_DIR_ENV",
    "RELEASES",
    "DatasetInfo",
    "DatasetIntegrityError",
    "DatasetNotFoundError",
    "DownloadError",
    "KNOWN_FILES",
    "Release",
    "UnsafeArchiveError",
    "available_datasets",
    "cache_dir",
    "dataset_names",
    "download_dataset",
    "find_dataset",
    "get_release",
    "load_dataset",
    "load_movielens",
    "parse_md5_text",
    "project_data_dir",
    "read_links",
    "read_tags",
    "read_users",
    "safe_extract",
    "search_places",
    "verify_release",
]

#: Environment variable naming the folder that holds MovieLens releases.
DATA_DIR_ENV = "RECENGINE_DATA_DIR"
#: Name of the binary parse cache written next to the data (or in the user cache).
CACHE_FILENAME = ".recengine-cache-v1.npz"
CACHE_FORMAT = 2
BASE_URL = "https://files.grouplens.org/datasets/movielens"
NO_GENRES = "(no genres listed)"
#: A release unpacks to well under this; a zip that declares more is refused (zip bomb).
MAX_UNPACKED_BYTES = 8 * 1024**3
SYNTHETIC = "synthetic"

#: `progress(done_bytes, total_bytes)`; total is None when the server does not say.
ProgressCallback = Callable[[int, "int | None"], None]
Layout = Literal["100k", "dat", "csv"]
_LAYOUTS = ("100k", "dat", "csv")

#: ml-100k's genre flags in column order, used when u.genre is missing.
_GENRES_100K = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)  # fmt: skip

#: Files each layout needs: (ratings, movies).
_CORE_FILES: dict[str, tuple[str, str]] = {
    "100k": ("u.data", "u.item"),
    "dat": ("ratings.dat", "movies.dat"),
    "csv": ("ratings.csv", "movies.csv"),
}


@dataclass(frozen=True)
class Release:
    """One MovieLens release as GroupLens publishes it.

    name: the release name used everywhere ("ml-1m"); folder: the directory inside the zip
    ("ml-10M100K" for ml-10m); layout: the file family ("100k": u.data/u.item/u.user,
    "dat": `::`-separated ratings.dat/movies.dat, "csv": ratings.csv/movies.csv);
    rating_scale: (lowest, highest) rating; text_encoding: encoding of the movie titles;
    n_ratings: number of ratings (from the release README); description: one line for people;
    zip_bytes / zip_md5: size and MD5 of the zip where they are reliably known (None otherwise;
    the download then checks against the `.md5` file GroupLens publishes beside the zip);
    cache_by_default: whether `load_movielens` keeps a binary parse cache.
    """

    name: str
    folder: str
    layout: Layout
    rating_scale: tuple[float, float]
    text_encoding: str
    n_ratings: int
    description: str
    zip_bytes: int | None = None
    zip_md5: str | None = None
    cache_by_default: bool = True

    def __post_init__(self) -> None:
        if self.layout not in _LAYOUTS:
            raise ValueError(f"layout must be one of {_LAYOUTS}, got {self.layout!r}")
        if self.zip_md5 is not None and not re.fullmatch(r"[0-9a-f]{32}", self.zip_md5):
            raise ValueError(f"zip_md5 must be 32 lowercase hex digits, got {self.zip_md5!r}")
        low, high = self.rating_scale
        if not low < high:
            raise ValueError(f"rating_scale must be (low, high) with low < high, got {self.rating_scale}")

    @property
    def url(self) -> str:
        """Official download address of the zip."""
        return f"{BASE_URL}/{self.name}.zip"

    @property
    def md5_url(self) -> str:
        """Address of the `.md5` file GroupLens publishes beside the zip."""
        return f"{self.url}.md5"

    @property
    def ratings_file(self) -> str:
        return _CORE_FILES[self.layout][0]

    @property
    def movies_file(self) -> str:
        return _CORE_FILES[self.layout][1]


# Sizes and MD5s below agree with the `<name>.zip.md5` files on files.grouplens.org as quoted
# by several independent projects; ml-latest-small is republished from time to time, so its
# digest is taken from the published .md5 file at download time instead.
RELEASES: dict[str, Release] = {
    release.name: release
    for release in (
        Release(
            "ml-100k", "ml-100k", "100k", (1.0, 5.0), "latin-1", 100_000,
            "100,000 ratings (1-5 stars) from 943 users on 1,682 movies (1998); canonical folds u1-u5, ua, ub",
            zip_bytes=4_924_029, zip_md5="0e33842e24a9c977be4e0107933c0723", cache_by_default=False,
        ),
        Release(
            "ml-latest-small", "ml-latest-small", "csv", (0.5, 5.0), "utf-8", 100_836,
            "100,836 ratings (half stars) from 610 users on 9,742 movies, with tags and links (2018)",
            cache_by_default=False,
        ),
        Release(
            "ml-1m", "ml-1m", "dat", (1.0, 5.0), "latin-1", 1_000_209,
            "1,000,209 ratings (1-5 stars) from 6,040 users on about 3,900 movies (2003)",
            zip_bytes=5_917_549, zip_md5="c4d9eecfca2ab87c1945afe126590906",
        ),
        Release(
            "ml-10m", "ml-10M100K", "dat", (0.5, 5.0), "utf-8", 10_000_054,
            "10,000,054 ratings (half stars) on 10,681 movies by 69,878 users, with tags (2009)",
            zip_bytes=65_566_137, zip_md5="ce571fd55effeba0271552578f2648bd",
        ),
        Release(
            "ml-20m", "ml-20m", "csv", (0.5, 5.0), "utf-8", 20_000_263,
            "20,000,263 ratings (half stars) from 138,493 users on 27,278 movies, with tags (2015)",
            zip_bytes=198_702_078, zip_md5="cd245b17a1ae2cc31bb14903e1204af3",
        ),
        Release(
            "ml-25m", "ml-25m", "csv", (0.5, 5.0), "utf-8", 25_000_095,
            "25,000,095 ratings (half stars) from 162,541 users on 62,423 movies, with tags (2019)",
            zip_bytes=261_978_986, zip_md5="6b51fb2759a8657d3bfcbfc42b592ada",
        ),
        Release(
            "ml-32m", "ml-32m", "csv", (0.5, 5.0), "utf-8", 32_000_204,
            "32,000,204 ratings (half stars) from 200,948 users on 87,585 movies, with tags (2023)",
            zip_bytes=238_950_008, zip_md5="d472be332d4daa821edc399621853b57",
        ),
    )
}  # fmt: skip

#: Size (bytes) and sha256 of every file of the official releases this project was checked
#: against (measured on the unpacked zips). A folder is held to this record when its README
#: is the official one (same size and sha256): a hand-made folder in the same layout (tests,
#: your own data) carries no README and is not checked. Releases not listed here are checked
#: against the manifest `download_dataset` records at download time (see `verify_release`).
KNOWN_FILES: dict[str, dict[str, tuple[int, str]]] = {
    "ml-100k": {
        "README": (6401, "b2f69dd0cab50c2b976da7c6113f267169cf0b35ade48de35fe75ed1b81c0f28"),
        "u.data": (1979173, "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490"),
        "u.genre": (202, "9757e0d3e6b298159a80dd48eaf938114690e911e39af97a76949ef1663610bb"),
        "u.info": (36, "5b0a40b2e47a729ee6203063f6dcf8790c2e63f5a18663e6ee318a72c5f3c27b"),
        "u.item": (236344, "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701"),
        "u.occupation": (193, "cd5fbec9afe345d993a62fc7817df1a4a9079c4feb267b3118763b8fd942137d"),
        "u.user": (22628, "f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c"),
        "u1.base": (1586544, "ce253ec86c448b44fb3ba9a30d12dcfc2e9210cbde71efada3730c22e9ac212a"),
        "u1.test": (392629, "18c6014a4b2c7324f250a63f8904a7b16b2b19f911129e346141507b0cbac950"),
        "u2.base": (1583948, "6c06f0b5df4b256da1a994f3ac66edc8da4d3f09bc9282df6b14d893366d703e"),
        "u2.test": (395225, "4de658d1e04ed9104629509a2e2528fce833ac8e048280183f1df167632038c3"),
        "u3.base": (1582546, "afdc155c291c6edc41c0407e39d7462eb98d341e064f0b0a12175b80b3c4af5d"),
        "u3.test": (396627, "0f548b51c78327de4c156461d3e430b7e5579fe2b5681586a59416e48fd35f6d"),
        "u4.base": (1581878, "219f0f4d40dfe9c5141d425f53fa91ee23ed275f14e280bbf1b50117afb064ca"),
        "u4.test": (397295, "7c02ad0a1e7ab1083c8b9d4b627203a051dd7b5eab46d99fa44de33470de8db9"),
        "u5.base": (1581776, "a9574e59ce961eec2121627760b6e9b0974ce1637b3fe69ac32cb14a4bfab485"),
        "u5.test": (397397, "351cc52e0d15b6c721466276fc24671d40936899e3d01fadeaf312915b8c5634"),
        "ua.base": (1792501, "67b5bcdb380c29f85d56a012ecd88612ae020f30a6730d117a334ee8203b91f2"),
        "ua.test": (186672, "d0497e202417720f57a184ec8c66be2d1afa4ff41bb53787c57b28d6bf79bc42"),
        "ub.base": (1792476, "237254d253b6ad7de84f919d041055428646254f34ed8f562703c899430cd881"),
        "ub.test": (186697, "d54a72d05730d5892062734b2bec73e976f9b713d18c828a18b968d6cce442da"),
    },
    "ml-latest-small": {  # the September 2018 release (README.txt "last updated 9/2018")
        "README.txt": (8342, "63d22ac138e80fae37021797ed8e1b9424b5239dc576a137422adf783ae3f404"),
        "links.csv": (197979, "97ad18e4e56a09363c65676b6cb3482ce3e2cea2372a24620c1599c843325f31"),
        "movies.csv": (494431, "5a5f32dd9bb3797b8e728a1b98958789d2b13f294a69fdfbc5727f8a9611aa07"),
        "ratings.csv": (2483723, "aa289ca83157595d0df6aea1be6a4ded676ddc4385472e8313a8ed9805352646"),
        "tags.csv": (118660, "92a9f8bb7916dceef6151209845788c3643f794dfa79d1feaec7121b5960399d"),
    },
}
#: The file of a release folder that identifies it as the official release (see KNOWN_FILES).
_README_NAMES = ("README", "README.txt", "README.html")
MANIFEST_FORMAT = 1


# --- errors ---------------------------------------------------------------------------------


class DownloadError(OSError):
    """A download failed, was cut short, or its bytes differ from the published size or MD5."""


class UnsafeArchiveError(ValueError):
    """A zip member would be written outside the target folder (absolute path, `..`, symlink)."""


class DatasetIntegrityError(ValueError):
    """A release file differs from its record (size or sha256): truncated, altered or replaced.

    `name` is the release, `path` the offending file, `problem` what differs. The message
    says how to get an intact copy.
    """

    def __init__(self, name: str, path: Path, problem: str) -> None:
        self.name, self.path, self.problem = name, Path(path), problem
        folder = self.path.parent
        super().__init__(
            f"{self.path} is damaged or altered: {problem}. Fix: restore {folder} from the official {name}.zip "
            f"(delete the folder, then run `python -m recengine download {name} --force`, which fetches and "
            f"verifies it into {cache_dir()}; a copy under {DATA_DIR_ENV} is found first, so remove or replace that one)."
        )

    def __reduce__(self) -> tuple[type, tuple[str, Path, str]]:
        return type(self), (self.name, self.path, self.problem)


class DatasetNotFoundError(FileNotFoundError):
    """A release is on none of the searched places; the message lists them and how to fix it.

    `name` is the release, `places` the folders looked in (in search order).
    """

    def __init__(self, name: str, places: list[Path], reason: str | None = None) -> None:
        self.name = name
        self.places = list(places)
        self.reason = reason
        release = RELEASES[name]
        lines = [f"MovieLens release {name} not found. Looked in:"]
        lines += [f"  - {place}" for place in self.places]
        if not os.environ.get(DATA_DIR_ENV):
            lines.append(f"  ({DATA_DIR_ENV} is not set)")
        if reason:
            lines.append(reason)
        size = f" ({release.zip_bytes / 1e6:.1f} MB)" if release.zip_bytes else ""
        lines.append(
            f"Fix: run `python -m recengine download {name}` to fetch {release.url}{size} into "
            f"{cache_dir()}, or unpack {name}.zip yourself and set {DATA_DIR_ENV} to the folder "
            f"that holds {release.folder}/."
        )
        super().__init__("\n".join(lines))

    def __reduce__(self) -> tuple[type, tuple[str, list[Path], str | None]]:
        return type(self), (self.name, self.places, self.reason)


# --- names and places -----------------------------------------------------------------------


def dataset_names() -> list[str]:
    """Every name `load_dataset` accepts: the MovieLens releases, "synthetic", then the saved
    uploads (`recengine.data.upload`, sorted by name)."""
    from recengine.data import upload

    return [*RELEASES, SYNTHETIC, *upload.upload_names()]


def get_release(name: str) -> Release:
    """The `Release` called `name` (case-insensitive; the zip folder name, e.g. "ml-10M100K", works too).

    Raises ValueError listing the known names for anything else.
    """
    key = str(name).strip().lower()
    for release in RELEASES.values():
        if key in (release.name, release.folder.lower()):
            return release
    shown = repr(name) if len(repr(name)) <= 80 else repr(name)[:79] + "…"  # input is echoed clipped
    raise ValueError(f"unknown MovieLens release {shown}; known datasets: {', '.join(dataset_names())}")


def cache_dir() -> Path:
    """The user cache for downloads and parse caches: `$XDG_CACHE_HOME/recengine` or `~/.cache/recengine`."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "recengine"


def project_data_dir() -> Path:
    """The project's `data/` folder (repository root / "data"), derived from the package location."""
    return Path(__file__).resolve().parents[2] / "data"


def search_places(name: str) -> list[Path]:
    """Every folder `find_dataset(name)` considers, in search order."""
    release = get_release(name)
    folder_names = list(dict.fromkeys((release.name, release.folder)))
    places: list[Path] = []
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        root = Path(env).expanduser()
        places += [root / folder for folder in folder_names]
        if root.name.lower() in {folder.lower() for folder in folder_names}:
            places.append(root)
    for base in (project_data_dir(), cache_dir()):
        places += [base / folder for folder in folder_names]
    return places


def _is_release_folder(folder: Path, release: Release) -> bool:
    return folder.is_dir() and all((folder / file).is_file() for file in _CORE_FILES[release.layout])


def find_dataset(name: str) -> Path | None:
    """The first folder in `search_places(name)` holding the release's ratings and movie files, else None."""
    release = get_release(name)
    for place in search_places(release.name):
        if _is_release_folder(place, release):
            return place
    return None


# --- download -------------------------------------------------------------------------------


def _open_url(url: str, timeout: float = 60.0) -> Any:
    """Open `url` for reading (the one place that touches the network; tests replace it)."""
    if not url.startswith("https://"):
        raise DownloadError(f"refusing to download from {url!r}: only https:// addresses are used")
    return urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 - https only, checked above


def parse_md5_text(text: str) -> str | None:
    """The MD5 digest in a checksum file, lowercase, or None when there is none.

    Reads both "MD5 (ml-25m.zip) = 6b51...ada" (BSD, as GroupLens writes it) and
    "6b51...ada  ml-25m.zip" (GNU md5sum).
    """
    match = re.search(r"(?<![0-9A-Fa-f])([0-9A-Fa-f]{32})(?![0-9A-Fa-f])", text)
    return match.group(1).lower() if match else None


def _published_md5(release: Release) -> str | None:
    """The digest from the `.md5` file beside the zip, or None when it cannot be fetched or read."""
    try:
        with _open_url(release.md5_url, timeout=30.0) as response:
            return parse_md5_text(response.read(4096).decode("ascii", errors="replace"))
    except (OSError, ValueError):
        return None


def _fetch(url: str, out: BinaryIO, progress: ProgressCallback | None) -> tuple[int, str]:
    """Stream `url` into `out`; returns (bytes written, md5 hex digest)."""
    digest = hashlib.md5(usedforsecurity=False)
    done = 0
    try:
        with _open_url(url) as response:
            status = getattr(response, "status", 200)
            if status != 200:
                raise DownloadError(f"downloading {url} failed: HTTP status {status}")
            length = response.headers.get("Content-Length") if getattr(response, "headers", None) else None
            total = int(length) if length and str(length).isdigit() else None
            if progress is not None:
                progress(0, total)
            while chunk := response.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
    except DownloadError:
        raise
    except OSError as exc:  # URLError, HTTPError, timeouts, connection resets
        raise DownloadError(f"could not download {url}: {exc}; check the network connection and try again") from exc
    if total is not None and done != total:
        raise DownloadError(f"download of {url} was cut short: got {done} of {total} bytes; try again")
    return done, digest.hexdigest()


def _verify_archive(release: Release, size: int, md5: str) -> None:
    """Compare a downloaded zip with the known size and MD5 (or the published .md5 file)."""
    if release.zip_bytes is not None and size != release.zip_bytes:
        raise DownloadError(
            f"{release.name}.zip has {size} bytes, expected {release.zip_bytes}: the download was cut "
            f"short or the file on the server changed; try again"
        )
    expected = release.zip_md5 or _published_md5(release)
    if expected is not None and md5 != expected:
        raise DownloadError(
            f"checksum mismatch for {release.name}.zip: expected MD5 {expected}, got {md5}; the download "
            f"is damaged or was replaced; try again, or fetch {release.url} by hand and unpack it into {DATA_DIR_ENV}"
        )


def safe_extract(archive: zipfile.ZipFile, target: Path) -> None:
    """Extract every member of `archive` under `target`, refusing anything that could escape it.

    Rejected before anything is written: absolute names (also Windows drive letters), names
    whose resolved path leaves `target` (`../x`), symbolic links, and archives declaring more
    than `MAX_UNPACKED_BYTES` in total. Raises `UnsafeArchiveError` naming the member.
    """
    root = Path(target).resolve()
    declared = 0
    for info in archive.infolist():
        name = info.filename
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UnsafeArchiveError(f"refusing to extract {name!r}: the archive holds a symbolic link")
        posix = PurePosixPath(name.replace("\\", "/"))
        if posix.is_absolute() or re.match(r"^[A-Za-z]:", name):
            raise UnsafeArchiveError(f"refusing to extract {name!r}: absolute path in the archive")
        if not (root / posix).resolve().is_relative_to(root):
            raise UnsafeArchiveError(f"refusing to extract {name!r}: it would be written outside {root}")
        declared += info.file_size
    if declared > MAX_UNPACKED_BYTES:
        raise UnsafeArchiveError(
            f"refusing to extract: the archive declares {declared} bytes, more than the {MAX_UNPACKED_BYTES} allowed"
        )
    archive.extractall(root)


def _install(extracted: Path, target: Path, replace: bool) -> None:
    """Move a fully extracted release folder to `target` with renames only."""
    if target.exists():
        if not replace:
            return  # another process finished the same download first; keep its copy
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(extracted, target)
        shutil.rmtree(old, ignore_errors=True)
        return
    try:
        os.replace(extracted, target)
    except OSError:
        if not target.is_dir():
            raise


def download_dataset(
    name: str,
    dest: str | Path | None = None,
    progress: ProgressCallback | None = None,
    *,
    force: bool = False,
) -> Path:
    """Download, verify and unpack a release into `dest/<name>` (default: the user cache); returns that folder.

    The zip streams to a temporary file in `dest` while `progress(done_bytes, total_bytes)` is
    called per MiB (total is None when the server sends no length). Its size and MD5 are
    checked when known (else against the `.md5` file published beside it), it is extracted
    with `safe_extract` into a temporary folder, and that folder is renamed into place, so a
    failed or interrupted download never leaves a half-written release. An already present
    release is returned as is unless `force`. Raises `DownloadError` (network, size or
    checksum) or `UnsafeArchiveError`.
    """
    release = get_release(name)
    root = Path(dest).expanduser() if dest is not None else cache_dir()
    target = root / release.name
    if not force and _is_release_folder(target, release):
        return target
    root.mkdir(parents=True, exist_ok=True)
    handle, part = tempfile.mkstemp(prefix=f".{release.name}-", suffix=".zip.part", dir=root)
    staging: Path | None = None
    try:
        with os.fdopen(handle, "wb") as out:
            size, md5 = _fetch(release.url, out, progress)
        _verify_archive(release, size, md5)
        staging = Path(tempfile.mkdtemp(prefix=f".{release.name}-", suffix=".extracting", dir=root))
        try:
            with zipfile.ZipFile(part) as archive:
                safe_extract(archive, staging)
        except zipfile.BadZipFile as exc:
            raise DownloadError(f"{release.url} is not a readable zip ({exc}); try again") from exc
        extracted = staging / release.folder
        if not _is_release_folder(extracted, release):
            expected = ", ".join(f"{release.folder}/{file}" for file in _CORE_FILES[release.layout])
            raise DownloadError(f"{release.url} does not contain {expected}; has the release changed?")
        _write_manifest(extracted, release, target)  # per-file record, checked on every load
        _install(extracted, target, replace=force)
    finally:
        Path(part).unlink(missing_ok=True)
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return target


# --- integrity of the unpacked files ---------------------------------------------------------

#: sha256 of files already hashed by this process, by (resolved path, size, mtime_ns).
_DIGESTS: dict[tuple[str, int, int], str] = {}
_DIGESTS_LOCK = threading.Lock()


def _file_sha256(path: Path) -> str:
    """sha256 hex digest of a file, remembered per (path, size, mtime) for this process."""
    info = path.stat()
    memo_key = (str(path.resolve()), info.st_size, info.st_mtime_ns)
    with _DIGESTS_LOCK:
        known = _DIGESTS.get(memo_key)
    if known is not None:
        return known
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    with _DIGESTS_LOCK:
        _DIGESTS[memo_key] = digest.hexdigest()
    return digest.hexdigest()


def _manifest_path(folder: Path, release: Release) -> Path:
    """Where the download-time manifest of the release at `folder` lives (in the user cache)."""
    key = hashlib.sha1(str(Path(folder).resolve()).encode(), usedforsecurity=False).hexdigest()[:12]
    return cache_dir() / "manifests" / f"{release.name}-{key}.json"


def _write_manifest(files_of: Path, release: Release, folder: Path) -> Path:
    """Record the size and sha256 of every file in `files_of` (a release just verified against its
    zip's MD5) as the manifest of the release that will live at `folder`; written atomically."""
    files = {
        entry.name: {"bytes": entry.stat().st_size, "sha256": _file_sha256(entry)}
        for entry in sorted(Path(files_of).iterdir())
        if entry.is_file() and not entry.is_symlink() and not entry.name.startswith(".")
    }
    manifest = {"format": MANIFEST_FORMAT, "release": release.name, "files": files}
    path = _manifest_path(folder, release)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(manifest, out, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _read_manifest(path: Path, release: Release) -> dict[str, tuple[int, str]] | None:
    """{file: (bytes, sha256)} from a manifest file; None (with a warning) when it is unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != MANIFEST_FORMAT or data.get("release") != release.name:
            raise ValueError(f"format {data.get('format')!r} of release {data.get('release')!r}")
        record = {str(name): (int(entry["bytes"]), str(entry["sha256"])) for name, entry in data["files"].items()}
        if not all(re.fullmatch(r"[0-9a-f]{64}", digest) for _, digest in record.values()):
            raise ValueError("a sha256 is not 64 lowercase hex digits")
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        warnings.warn(f"ignoring the unreadable manifest {path} ({exc}); delete it or download {release.name} again", stacklevel=3)
        return None
    return record


def _recorded_files(folder: Path, release: Release) -> dict[str, tuple[int, str]] | None:
    """The record `folder` is held to: its download manifest, else the official release's
    files (KNOWN_FILES) when the folder's README is the official one; None for a folder
    with no record (unpacked by hand from an unknown zip, or made by hand)."""
    manifest = _manifest_path(folder, release)
    if manifest.is_file():
        record = _read_manifest(manifest, release)
        if record is not None:
            return record
    known = KNOWN_FILES.get(release.name)
    if not known:
        return None
    for name in _README_NAMES:
        readme = folder / name
        if name in known and readme.is_file():
            size, digest = known[name]
            if readme.stat().st_size == size and _file_sha256(readme) == digest:
                return known
    return None


def _check_record(folder: Path, release: Release, record: dict[str, tuple[int, str]], *, full: bool) -> None:
    """Raise DatasetIntegrityError for the first recorded file whose size (or, when `full`, sha256)
    differs. Recorded files that are absent are left to the code that needs them (folds, tags)."""
    present = [(name, folder / name, size, digest) for name, (size, digest) in sorted(record.items()) if (folder / name).is_file()]
    for name, path, size, _ in present:
        found = path.stat().st_size
        if found != size:
            kind = "truncated" if found < size else "longer than the release's"
            raise DatasetIntegrityError(release.name, path, f"{found:,} bytes instead of {size:,} ({kind})")
    if full:
        for name, path, _, digest in present:
            found_digest = _file_sha256(path)
            if found_digest != digest:
                raise DatasetIntegrityError(
                    release.name, path, f"its sha256 is {found_digest}, the release's is {digest} (same size, altered content)"
                )


def verify_release(folder: str | Path, name: str, *, full: bool = True) -> bool:
    """Check the files of a release folder against their record; True when checked, False when
    the folder has no record.

    The record is the manifest `download_dataset` writes (sizes and sha256 of the unpacked
    files, taken right after the zip's MD5 was verified), else `KNOWN_FILES` when the folder's
    README is the official release's. Sizes are compared always (cheap); sha256 when `full`
    (each file is hashed once per process and modification time). Raises
    `DatasetIntegrityError` naming the first file that differs and how to restore it.
    `load_movielens` calls this on every load: sizes always, hashes whenever it parses (a valid
    binary cache proves the files are unchanged since the verified parse that wrote it).
    """
    release = get_release(name)
    folder = Path(folder).expanduser()
    record = _recorded_files(folder, release)
    if record is None:
        return False
    _check_record(folder, release, record, full=full)
    return True


# --- parsing --------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Parsed:
    """A parsed release before it becomes a Dataset (also what the binary cache stores).

    user_ids/item_ids: int64 sorted raw ids; users/items: int32 indices per rating;
    ratings float32; timestamps int64; titles/genres/years aligned with item_ids
    (years None: taken from the titles).
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray
    titles: list[str]
    genres: list[tuple[str, ...]]
    years: list[int | None] | None


def _parse_error(path: Path, expected: str, exc: Exception) -> ValueError:
    return ValueError(f"could not parse {path} (expected {expected}): {exc}")


def _read_ratings(path: Path, layout: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(raw user ids int64, raw item ids int64, ratings float32, timestamps int64) of a ratings file."""
    dtypes = (np.int64, np.int64, np.float32, np.int64)
    try:
        if layout == "csv":
            columns = ["userId", "movieId", "rating", "timestamp"]
            frame = pd.read_csv(path, engine="c", usecols=columns, dtype=dict(zip(columns, dtypes)))
            frame = frame[columns]
        elif layout == "dat":
            # "1::1193::5::978300760" split on ":" gives fields 0, 2, 4, 6 with empty ones between:
            # the fast C parser handles that, where sep="::" would need the slow python engine.
            columns = [0, 2, 4, 6]
            frame = pd.read_csv(
                path, sep=":", header=None, engine="c", usecols=columns, dtype=dict(zip(columns, dtypes))
            )[columns]
        else:
            columns = [0, 1, 2, 3]
            frame = pd.read_csv(path, sep="\t", header=None, engine="c", usecols=columns, dtype=dict(zip(columns, dtypes)))
    except (ValueError, pd.errors.ParserError) as exc:
        raise _parse_error(path, "user, movie, rating, timestamp on every line", exc) from exc
    return tuple(frame.iloc[:, k].to_numpy(dtype=dtype) for k, dtype in enumerate(dtypes))  # type: ignore[return-value]


def _decode(raw: bytes, encoding: str) -> str:
    """Text of a movie file in its release's encoding, falling back to latin-1 (which never fails)."""
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _split_genres(text: str) -> tuple[str, ...]:
    return () if text in ("", NO_GENRES) else tuple(text.split("|"))


def _read_movies(folder: Path, release: Release) -> tuple[np.ndarray, list[str], list[tuple[str, ...]], list[int | None] | None]:
    """(movie ids int64, titles, genre tuples, years or None) of the release's movie list."""
    if release.layout == "100k":
        return _read_items_100k(folder, release)
    path = folder / release.movies_file
    try:
        if release.layout == "csv":
            frame = pd.read_csv(
                path, engine="c", encoding=release.text_encoding, keep_default_na=False,
                dtype={"movieId": np.int64, "title": str, "genres": str},
            )  # fmt: skip
            frame = frame[["movieId", "title", "genres"]]
        else:
            text = _decode(path.read_bytes().replace(b"::", b"\t"), release.text_encoding)
            frame = pd.read_csv(
                io.StringIO(text), sep="\t", header=None, names=["movieId", "title", "genres"], engine="c",
                quoting=csv.QUOTE_NONE, keep_default_na=False, dtype={"movieId": np.int64, "title": str, "genres": str},
            )  # fmt: skip
    except (ValueError, KeyError, pd.errors.ParserError) as exc:
        raise _parse_error(path, "movieId, title, genres on every line", exc) from exc
    genres = [_split_genres(text) for text in frame["genres"].tolist()]
    return frame["movieId"].to_numpy(dtype=np.int64), frame["title"].tolist(), genres, None


def _read_items_100k(folder: Path, release: Release) -> tuple[np.ndarray, list[str], list[tuple[str, ...]], list[int | None]]:
    """u.item: id|title|release date|video release date|IMDb URL|19 genre flags (names from u.genre)."""
    genre_names = list(_GENRES_100K)
    genre_file = folder / "u.genre"
    if genre_file.is_file():
        table = pd.read_csv(genre_file, sep="|", header=None, names=["genre", "index"], encoding=release.text_encoding,
                            keep_default_na=False, dtype={"genre": str, "index": np.int64}, engine="c")  # fmt: skip
        genre_names = table.sort_values("index")["genre"].tolist()
    path = folder / release.movies_file
    n_fixed = 5
    try:
        frame = pd.read_csv(
            path, sep="|", header=None, engine="c", encoding=release.text_encoding, quoting=csv.QUOTE_NONE,
            keep_default_na=False, dtype={0: np.int64, 1: str, 2: str, 3: str, 4: str},
        )  # fmt: skip
        if frame.shape[1] != n_fixed + len(genre_names):
            raise ValueError(f"{frame.shape[1]} columns instead of {n_fixed + len(genre_names)}")
        flags = frame.iloc[:, n_fixed:].to_numpy(dtype=np.int8).astype(bool)
    except (ValueError, pd.errors.ParserError) as exc:
        raise _parse_error(path, f"id|title|release date|video date|url|{len(genre_names)} genre flags", exc) from exc
    names = np.array(genre_names, dtype=object)
    flags[:, names == "unknown"] = False
    genres = [tuple(names[row].tolist()) for row in flags]
    # The title carries the year; a title without one falls back to the release date ("01-Jan-1995").
    release_years = frame[2].str.extract(r"(\d{4})\s*$", expand=False).tolist()
    years: list[int | None] = []
    for title, release_year in zip(frame[1].tolist(), release_years):
        year = parse_title(title)[1]
        years.append(int(release_year) if year is None and isinstance(release_year, str) else year)
    return frame[0].to_numpy(dtype=np.int64), frame[1].tolist(), genres, years


def _first_of_runs(sorted_values: np.ndarray) -> np.ndarray:
    """Boolean mask of the first element of each run of equal values in a sorted array.

    (A sort plus this mask replaces `np.unique`, whose hash-based path is slow for int64 ids.)
    """
    first = np.ones(sorted_values.shape, dtype=bool)
    first[1:] = sorted_values[1:] != sorted_values[:-1]
    return first


def _contiguous(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted unique raw ids int64, int32 index of each element): ids numbered in sorted order.

    Small non-negative ids (all of MovieLens) use a presence table, O(n) instead of a sort.
    """
    if raw.size and raw.min() >= 0 and raw.max() <= 4 * raw.size + (1 << 20):
        present = np.zeros(int(raw.max()) + 1, dtype=bool)
        present[raw] = True
        ids = np.flatnonzero(present).astype(np.int64)
        lookup = (np.cumsum(present, dtype=np.int64) - 1).astype(np.int32)
        return ids, lookup[raw]
    order = np.argsort(raw, kind="stable")
    first = _first_of_runs(raw[order])
    index = np.empty(raw.shape, dtype=np.int32)
    index[order] = np.cumsum(first) - 1
    return raw[order][first].astype(np.int64), index


def _positions(movie_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
    """Row of each item id in the movie list (first row when listed twice), -1 when not listed."""
    if movie_ids.size == 0:
        return np.full(item_ids.shape, -1, dtype=np.int64)
    order = np.argsort(movie_ids, kind="stable")
    first = _first_of_runs(movie_ids[order])
    unique, rows = movie_ids[order][first], order[first]
    slot = np.clip(np.searchsorted(unique, item_ids), 0, unique.size - 1)
    return np.where(unique[slot] == item_ids, rows[slot], -1).astype(np.int64)


def _parse_release(folder: Path, release: Release) -> _Parsed:
    """Read the ratings and movie files of `folder` (no cache)."""
    ratings_path = folder / release.ratings_file
    raw_users, raw_items, ratings, timestamps = _read_ratings(ratings_path, release.layout)
    if ratings.size:
        low, high = release.rating_scale
        if ratings.min() < low or ratings.max() > high:
            raise ValueError(
                f"{ratings_path}: {release.name} ratings lie in {low}..{high}, found {ratings.min()}..{ratings.max()}; "
                f"is this folder really {release.name}?"
            )
    user_ids, users = _contiguous(raw_users)
    item_ids, items = _contiguous(raw_items)
    del raw_users, raw_items
    movie_ids, movie_titles, movie_genres, movie_years = _read_movies(folder, release)
    rows = _positions(movie_ids, item_ids).tolist()
    titles = [movie_titles[row].replace(_SEPARATOR, "") if row >= 0 else f"Item {raw}" for row, raw in zip(rows, item_ids.tolist())]
    genres = [movie_genres[row] if row >= 0 else () for row in rows]
    years = None if movie_years is None else [movie_years[row] if row >= 0 else None for row in rows]
    return _Parsed(user_ids, item_ids, users, items, ratings, timestamps, titles, genres, years)


# --- binary parse cache ---------------------------------------------------------------------


def _fingerprint(folder: Path, release: Release) -> list[list[Any]]:
    """[file name, size, mtime_ns] of every source file the parse reads."""
    names = [*_CORE_FILES[release.layout], *(["u.genre"] if release.layout == "100k" else [])]
    entries = []
    for name in names:
        path = folder / name
        if path.is_file():
            info = path.stat()
            entries.append([name, info.st_size, info.st_mtime_ns])
    return entries


def _cache_paths(folder: Path, release: Release) -> list[Path]:
    """Where the parse cache may live: next to the data, then in the user cache (read-only data)."""
    key = hashlib.sha1(str(folder.resolve()).encode(), usedforsecurity=False).hexdigest()[:12]
    return [folder / CACHE_FILENAME, cache_dir() / "parsed" / f"{release.name}-{key}{CACHE_FILENAME}"]


def _is_writable(folder: Path) -> bool:
    """Whether we may add files to `folder`: writable for us *and* not marked read-only.

    The mode bit matters for root, who may write anywhere but should leave a read-only
    shared data folder alone.
    """
    try:
        return os.access(folder, os.W_OK) and bool(folder.stat().st_mode & stat.S_IWUSR)
    except OSError:
        return False


_SEPARATOR = "\x00"  # between titles (and genre lists) in the cache; stripped from titles when parsing


def _text_array(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)


def _array_text(array: np.ndarray) -> str:
    return array.tobytes().decode("utf-8")


def _split_text(text: str, count: int) -> list[str]:
    parts = text.split(_SEPARATOR) if count else []
    if len(parts) != count:
        raise ValueError(f"cache holds {len(parts)} entries for {count} items")
    return parts


def _cache_manifest(release: Release, fingerprint: list[list[Any]], verified: bool) -> dict[str, Any]:
    """What a parse cache records of its sources; `verified`: their checksums were checked before the parse."""
    return {"format": CACHE_FORMAT, "release": release.name, "sources": fingerprint, "verified": verified}


#: A temporary cache file older than this was left by a process that died mid-write.
_STALE_SECONDS = 3600.0


def _remove_stale_temporaries(path: Path) -> None:
    """Delete `<path name>.*.tmp` files beside `path` older than _STALE_SECONDS (a killed writer's leftovers)."""
    now = time.time()
    for leftover in path.parent.glob(f"{glob.escape(path.name)}.*.tmp"):
        try:
            if now - leftover.stat().st_mtime > _STALE_SECONDS:
                leftover.unlink()
        except OSError:
            pass  # another process removed it or it is not ours to remove


def _write_cache(
    parsed: _Parsed, fingerprint: list[list[Any]], folder: Path, release: Release, *, verified: bool = False
) -> Path | None:
    """Write the parse cache atomically to the first writable place; None (with a warning) if none is."""
    manifest = _cache_manifest(release, fingerprint, verified)
    arrays = {
        "users": parsed.users, "items": parsed.items, "ratings": parsed.ratings, "timestamps": parsed.timestamps,
        "user_ids": parsed.user_ids, "item_ids": parsed.item_ids,
        "manifest": _text_array(json.dumps(manifest)),
        "titles": _text_array(_SEPARATOR.join(parsed.titles)),
        "genres": _text_array(_SEPARATOR.join("|".join(g) for g in parsed.genres)),
    }  # fmt: skip
    if parsed.years is not None:
        arrays["years"] = np.array([-1 if y is None else y for y in parsed.years], dtype=np.int32)
    failures = []
    next_to_data, in_user_cache = _cache_paths(folder, release)
    for path in (next_to_data, in_user_cache) if _is_writable(folder) else (in_user_cache,):
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _remove_stale_temporaries(path)
            handle, tmp = tempfile.mkstemp(prefix=f"{path.name}.", suffix=".tmp", dir=path.parent)
            with os.fdopen(handle, "wb") as out:
                np.savez(out, **arrays)
            os.replace(tmp, path)
            return path
        except OSError as exc:
            failures.append(f"{path.parent}: {exc}")
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
    warnings.warn(f"could not write the {release.name} parse cache ({'; '.join(failures)}); loads stay slow", stacklevel=3)
    return None


def _read_cache(path: Path, fingerprint: list[list[Any]], release: Release, *, verified: bool = False) -> _Parsed | None:
    """The cached parse at `path` when it exists and matches the source files (and was written
    after a checksum verification when `verified` is asked for), else None."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            manifest = json.loads(_array_text(stored["manifest"]))
            if manifest != _cache_manifest(release, fingerprint, verified):
                return None
            arrays = {key: stored[key] for key in ("user_ids", "item_ids", "users", "items", "ratings", "timestamps")}
            n_items = len(arrays["item_ids"])
            titles = _split_text(_array_text(stored["titles"]), n_items)
            genres = [tuple(g.split("|")) if g else () for g in _split_text(_array_text(stored["genres"]), n_items)]
            years = None if "years" not in stored.files else [None if y < 0 else y for y in stored["years"].tolist()]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):  # UnicodeDecodeError and JSON errors are ValueErrors
        return None  # damaged or foreign file: parse again and overwrite it
    return _Parsed(**arrays, titles=titles, genres=genres, years=years)


# --- loading --------------------------------------------------------------------------------


def load_movielens(folder: str | Path, name: str, *, cache: bool | None = None) -> Dataset:
    """Parse the release `name` from `folder` into a Dataset (see the module docstring for what it holds).

    cache: keep a binary parse cache (`CACHE_FILENAME`) next to the data, or in the user cache
    when the folder is read-only; None uses the release's default (on for everything but
    ml-100k and ml-latest-small). The cache records the size and mtime of the source files and
    is rebuilt when they change; it is read with `allow_pickle=False`.
    Integrity: a folder with a record (see `verify_release`) has its file sizes checked on
    every load and its sha256s whenever it is parsed (not on a valid cache hit).
    Raises FileNotFoundError when `folder` lacks the release's files, `DatasetIntegrityError`
    (a ValueError) when a file differs from its record, ValueError when they do not parse or
    hold ratings outside the release's scale.
    """
    release = get_release(name)
    folder = Path(folder).expanduser()
    if not _is_release_folder(folder, release):
        expected = " and ".join(_CORE_FILES[release.layout])
        raise FileNotFoundError(f"{folder} does not hold {release.name}: expected {expected} in it")
    use_cache = release.cache_by_default if cache is None else bool(cache)
    record = _recorded_files(folder, release)
    if record is not None:
        _check_record(folder, release, record, full=False)  # sizes: a few stat calls
    parsed = None
    if use_cache:
        fingerprint = _fingerprint(folder, release)
        for path in _cache_paths(folder, release):
            parsed = _read_cache(path, fingerprint, release, verified=record is not None)
            if parsed is not None:
                break
    if parsed is None:
        if record is not None:  # parsing anyway: hash the files first (once per process and mtime)
            _check_record(folder, release, record, full=True)
        parsed = _parse_release(folder, release)
        if use_cache:
            _write_cache(parsed, fingerprint, folder, release, verified=record is not None)
    catalogue = make_catalogue(parsed.item_ids, parsed.titles, parsed.genres, parsed.items, parsed.ratings, years=parsed.years)
    return Dataset.from_arrays(
        release.name,
        parsed.users,
        parsed.items,
        parsed.ratings,
        parsed.timestamps,
        user_map=IdMap(parsed.user_ids),
        item_map=IdMap(parsed.item_ids),
        catalogue=catalogue,
        rating_scale=release.rating_scale,
        source=folder,
    )


def load_dataset(
    name: str,
    *,
    download: bool = False,
    progress: ProgressCallback | None = None,
    cache: bool | None = None,
) -> Dataset:
    """Load a dataset by name: a MovieLens release found on disk (see `find_dataset`), "synthetic",
    or a saved upload (`recengine.data.upload.load_upload`, checksum verified).

    download: fetch the release into the user cache when it is on none of the searched places
    (`progress(done_bytes, total_bytes)` follows the download); cache: see `load_movielens`.
    "synthetic" returns `generate_synthetic(seed=0)`.
    Raises ValueError for unknown names (listing the known ones) and `DatasetNotFoundError`
    (a FileNotFoundError listing every place looked in and how to fix it) when the release is
    absent and downloading is off or fails.
    """
    if str(name).strip().lower() == SYNTHETIC:
        from recengine.data.synthetic import generate_synthetic

        return generate_synthetic(seed=0)
    from recengine.data import upload

    if upload.is_upload(name):
        return upload.load_upload(name)
    release = get_release(name)
    folder = find_dataset(release.name)
    if folder is None:
        places = search_places(release.name)
        if not download:
            raise DatasetNotFoundError(release.name, places)
        try:
            folder = download_dataset(release.name, progress=progress)
        except (OSError, UnsafeArchiveError) as exc:
            raise DatasetNotFoundError(release.name, places, reason=f"Downloading it failed: {exc}") from exc
    return load_movielens(folder, release.name, cache=cache)


# --- optional parts (not needed for the Dataset) -------------------------------------------


def _read_dat(path: Path, columns: list[str], encoding: str, dtype: dict[str, Any]) -> pd.DataFrame:
    text = _decode(path.read_bytes().replace(b"::", b"\t"), encoding)
    return pd.read_csv(io.StringIO(text), sep="\t", header=None, names=columns, engine="c",
                       quoting=csv.QUOTE_NONE, keep_default_na=False, dtype=dtype)  # fmt: skip


def read_users(folder: str | Path, name: str) -> pd.DataFrame | None:
    """User demographics, or None for releases without them (only ml-100k and ml-1m have them).

    Columns: user_id int64, age int64, gender str ("M"/"F"), occupation, zip_code str.
    ml-100k gives the age in years and the occupation as a word; ml-1m gives an age-group code
    (1, 18, 25, ...) and an occupation code 0-20 (see the release README).
    """
    release, folder = get_release(name), Path(folder)
    if release.layout == "100k" and (folder / "u.user").is_file():
        return pd.read_csv(folder / "u.user", sep="|", header=None, engine="c", encoding=release.text_encoding,
                           names=["user_id", "age", "gender", "occupation", "zip_code"], keep_default_na=False,
                           dtype={"user_id": np.int64, "age": np.int64, "gender": str, "occupation": str, "zip_code": str})  # fmt: skip
    if release.layout == "dat" and (folder / "users.dat").is_file():
        frame = _read_dat(folder / "users.dat", ["user_id", "gender", "age", "occupation", "zip_code"], release.text_encoding,
                          {"user_id": np.int64, "gender": str, "age": np.int64, "occupation": np.int64, "zip_code": str})  # fmt: skip
        return frame[["user_id", "age", "gender", "occupation", "zip_code"]]
    return None


def read_tags(folder: str | Path, name: str) -> pd.DataFrame | None:
    """Free-text tags, or None for releases without them.

    Columns: user_id int64, item_id int64 (raw movieId), tag str, timestamp int64.
    """
    release, folder = get_release(name), Path(folder)
    columns = ["user_id", "item_id", "tag", "timestamp"]
    dtype = {"user_id": np.int64, "item_id": np.int64, "tag": str, "timestamp": np.int64}
    if release.layout == "csv" and (folder / "tags.csv").is_file():
        frame = pd.read_csv(folder / "tags.csv", engine="c", keep_default_na=False, encoding=release.text_encoding,
                            dtype={"userId": np.int64, "movieId": np.int64, "tag": str, "timestamp": np.int64})  # fmt: skip
        return frame.rename(columns={"userId": "user_id", "movieId": "item_id"})[columns]
    if release.layout == "dat" and (folder / "tags.dat").is_file():
        return _read_dat(folder / "tags.dat", columns, release.text_encoding, dtype)
    return None


def read_links(folder: str | Path, name: str) -> pd.DataFrame | None:
    """IMDb and TMDb ids per movie (csv releases), or None.

    Columns: item_id int64 (raw movieId), imdb_id str (leading zeros kept, e.g. "0114709"),
    tmdb_id Int64 (missing for a few movies).
    """
    release, folder = get_release(name), Path(folder)
    if release.layout != "csv" or not (folder / "links.csv").is_file():
        return None
    frame = pd.read_csv(folder / "links.csv", engine="c", dtype={"movieId": np.int64, "imdbId": str, "tmdbId": "Int64"})
    return frame.rename(columns={"movieId": "item_id", "imdbId": "imdb_id", "tmdbId": "tmdb_id"})


# --- what is available ----------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetInfo:
    """One entry of `available_datasets()`, for the `datasets` command and the app's picker.

    path: the folder it would be loaded from (None when absent); downloadable: whether
    `download_dataset` can fetch it; download_bytes: zip size when known; n_ratings: number of
    ratings (None for synthetic data, whose size is chosen by the generator); generated: made
    on the fly rather than read from disk.
    """

    name: str
    path: Path | None
    downloadable: bool
    download_bytes: int | None
    n_ratings: int | None
    description: str
    generated: bool = False

    @property
    def available(self) -> bool:
        """Whether `load_dataset(name)` works without downloading."""
        return self.generated or self.path is not None


def available_datasets() -> list[DatasetInfo]:
    """Every dataset name with where it was found (or None): the releases, smallest first, then
    "synthetic", then the saved uploads by name (their folder as `path`; not downloadable)."""
    from recengine.data import upload

    infos = [
        DatasetInfo(release.name, find_dataset(release.name), True, release.zip_bytes, release.n_ratings, release.description)
        for release in RELEASES.values()
    ]
    infos.append(
        DatasetInfo(SYNTHETIC, None, False, None, None, "generated ratings with known structure (seed 0), for tests and demos", generated=True)
    )
    infos += [DatasetInfo(info.name, info.path, False, None, info.n_ratings, info.description) for info in upload.list_uploads()]
    return infos
