"""Bring your own ratings: parse a CSV/TSV ratings file into a `Dataset` and keep it as a named upload.

The flow is parse -> validate -> build -> save, and nothing is half-imported: `parse_upload`
either returns a complete `ParsedUpload` (a Dataset built in memory plus a report of what was
read) or raises one `UploadError` listing every problem found, and `save_upload` writes the
upload folder under a temporary name and renames it into place.

Ratings file: one rating per row with a user id, an item id, a rating and optionally a
timestamp (seconds since the epoch, or an ISO 8601 date). What is guessed, and can be given:

- encoding: UTF-8 (with or without a byte-order mark); anything else is refused with the byte
  offset of the first undecodable byte, unless an `encoding` such as "latin-1" is given;
- delimiter: tab, comma, semicolon, "|" or "::" (MovieLens .dat), whichever splits the first
  lines into the same number (>= 3) of columns; else runs of whitespace;
- header: the first row is a header when one of its fields is a known column name, or when
  none of its fields is a number while the second row has some;
- columns: by name from the header (`COLUMN_ALIASES`: userId/user_id/user, movieId/item/item_id,
  rating/score/stars, timestamp/time/date, ...), or by position (1, 2, 3, 4) without a header;
  `columns={"user": "reviewer", "rating": "3"}` overrides any role by header name or 1-based position;
- rating scale: (1, 5) when every rating is a whole number from 1 to 5, (0.5, 5) when every
  rating lies in 0.5..5; anything else must be declared with `scale=(low, high)`.

Rules (each breach is reported with its 1-based row number in the file, the header counting as
row 1, and the column's name):

- user and item ids are non-empty text (at most `MAX_ID_CHARS` characters); ids that are all
  plain integers become int64 ids, otherwise ids stay strings;
- ratings are numbers inside the scale (NaN and infinities refused); timestamps, when the
  column exists, are numbers or dates on every row;
- duplicate (user, item) pairs: the latest by timestamp is kept (the last row among equal
  timestamps, or the last row when there are no timestamps); how many were dropped is reported;
- blank lines are ignored (they still count for row numbers; a quoted field that spans lines
  shifts the numbers after it); empty files, header-only files,
  binary files (NUL or other control bytes), UTF-16 files and files over the `UploadLimits`
  (default 50 MB and 5,000,000 rows) are refused.

Items file (optional): item id and title, optionally genres ("Action|Comedy") and year
(otherwise taken from a "(1999)" at the end of the title). Rated items missing from it get the
title "Item <id>"; listed items without ratings are left out (the catalogue has one row per
rated item, as for MovieLens).

Storage: `<uploads_dir()>/<name>/` (default `$XDG_DATA_HOME/recengine/uploads`, else
`~/.local/share/recengine/uploads`; `$RECENGINE_UPLOADS_DIR` overrides) holds `ratings.npz`
(arrays only, read with `allow_pickle=False`) and `manifest.json` (sizes, checksum, counts,
scale, what was guessed). `load_upload(name)` verifies the checksum before building the Dataset.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from recengine.data.dataset import Dataset, IdMap, make_catalogue

__all__ = [
    "COLUMN_ALIASES",
    "ITEM_COLUMN_ALIASES",
    "MAX_ID_CHARS",
    "UPLOADS_DIR_ENV",
    "ParsedUpload",
    "Problem",
    "UploadError",
    "UploadInfo",
    "UploadLimits",
    "UploadReport",
    "delete_upload",
    "import_upload",
    "is_upload",
    "list_uploads",
    "load_upload",
    "upload_fingerprint",
    "preview_upload",
    "UploadPreview",
    "parse_column_mapping",
    "parse_scale",
    "parse_upload",
    "save_upload",
    "upload_names",
    "uploads_dir",
    "user_data_dir",
    "validate_upload_name",
]

#: Environment variable naming the uploads folder (default `<user_data_dir()>/uploads`).
UPLOADS_DIR_ENV = "RECENGINE_UPLOADS_DIR"
#: Longest user or item id accepted, in characters.
MAX_ID_CHARS = 200
#: How many problems an `UploadError` message spells out (all are kept in `.problems`).
SHOWN_PROBLEMS = 8
STORAGE_FORMAT = 1

#: Header names recognised per role of the ratings file (compared lowercased, without `_`, `-`, spaces).
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "user": ("userid", "user", "users", "uid", "username", "customerid", "customer", "reviewerid", "reviewer", "rater"),
    "item": ("movieid", "movie", "itemid", "item", "items", "iid", "productid", "product", "bookid", "book", "film", "filmid"),
    "rating": ("rating", "ratings", "score", "stars", "star", "rate", "value"),
    "timestamp": ("timestamp", "time", "date", "datetime", "ratedat", "ts", "unixtime", "created", "createdat"),
}
#: Header names recognised per role of the items file.
ITEM_COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "item": (*COLUMN_ALIASES["item"], "id"),
    "title": ("title", "name", "movietitle", "movie_title", "itemname", "itemtitle"),
    "genres": ("genres", "genre", "categories", "category"),
    "year": ("year", "releaseyear", "released"),
}
_RATING_ROLES = ("user", "item", "rating", "timestamp")
_ITEM_ROLES = ("item", "title", "genres", "year")
_REQUIRED = {"ratings": ("user", "item", "rating"), "items": ("item", "title")}
_DELIMITERS = ("\t", ",", ";", "|")
_DELIMITER_NAMES = {"\t": "tab", ",": "comma", ";": "semicolon", "|": "'|'", "::": "'::'", r"\s+": "whitespace"}
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_INTEGER = r"[+-]?(?:0|[1-9][0-9]{0,17})"
_NO_GENRES = {"", "(no genres listed)", "unknown"}


# --- errors and reports ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    """One validation failure: `row` is 1-based as in the file (header = row 1; None for the whole
    file), `column` the column's name as in the header (or its 1-based position)."""

    file: str
    row: int | None
    column: str | None
    message: str

    def __str__(self) -> str:
        where = []
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column {self.column!r}")
        return f"{', '.join(where)}: {self.message}" if where else self.message


class UploadError(ValueError):
    """An upload was refused as a whole. `problems` lists every failure (row, column, message);
    the message spells out the first `SHOWN_PROBLEMS` of them."""

    def __init__(self, problems: Sequence[Problem] | str, file: str = "upload") -> None:
        if isinstance(problems, str):
            problems = [Problem(file, None, None, problems)]
        order = {file: rank for rank, file in enumerate(dict.fromkeys(p.file for p in problems))}
        self.problems = sorted(problems, key=lambda p: (order[p.file], p.row if p.row is not None else 0))
        files = list(dict.fromkeys(p.file for p in self.problems))
        shown = "; ".join(str(p) for p in self.problems[:SHOWN_PROBLEMS])
        more = len(self.problems) - SHOWN_PROBLEMS
        tail = f"; and {more} more problem(s)" if more > 0 else ""
        count = f"{len(self.problems)} problems: " if len(self.problems) > 1 else ""
        message = f"{', '.join(files)} refused, nothing imported: {count}{shown}{tail}"
        super().__init__(" ".join(message.splitlines()))  # one line, whatever a parser said


@dataclass(frozen=True)
class UploadLimits:
    """Largest upload accepted: `max_bytes` of the raw file and `max_rows` of ratings (data rows)."""

    max_bytes: int = 50 * 1024 * 1024
    max_rows: int = 5_000_000

    def __post_init__(self) -> None:
        for label in ("max_bytes", "max_rows"):
            value = getattr(self, label)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"UploadLimits.{label} must be a positive int, got {value!r}")


@dataclass(frozen=True)
class UploadReport:
    """What `parse_upload` read and guessed, for the page and the command line to show.

    columns: role -> column name used (header text, or "1".."N" without a header);
    scale_inferred: whether the rating scale was guessed rather than given;
    duplicates_dropped: (user, item) rows dropped by the keep-the-latest policy;
    blank_rows: blank lines skipped; items_untitled: rated items absent from the items file;
    items_unrated: items-file rows for items nobody rated (left out).
    """

    source: str
    encoding: str
    delimiter: str
    header: bool
    columns: dict[str, str]
    rating_scale: tuple[float, float]
    scale_inferred: bool
    n_rows: int
    n_ratings: int
    n_users: int
    n_items: int
    duplicates_dropped: int
    blank_rows: int = 0
    items_source: str | None = None
    items_untitled: int = 0
    items_unrated: int = 0

    def summary(self) -> str:
        """One paragraph for people: counts, scale, what was dropped and how the file was read."""
        low, high = self.rating_scale
        scale = f"scale {low:g}-{high:g}{' (inferred)' if self.scale_inferred else ''}"
        parts = [f"{self.n_ratings:,} ratings from {self.n_users:,} users on {self.n_items:,} items, {scale}"]
        if self.duplicates_dropped:
            parts.append(f"{self.duplicates_dropped:,} duplicate (user, item) rows dropped (kept the latest)")
        if self.items_source is not None:
            parts.append(f"{self.items_untitled:,} rated items without a title, {self.items_unrated:,} listed items unrated")
        mapping = ", ".join(f"{role}={name}" for role, name in self.columns.items())
        delimiter = _DELIMITER_NAMES.get(self.delimiter, repr(self.delimiter))
        parts.append(f"read as {self.encoding}, {delimiter}-separated, {'with' if self.header else 'no'} header; columns {mapping}")
        return "; ".join(parts)


@dataclass(frozen=True, eq=False)
class ParsedUpload:
    """A validated upload built in memory: the Dataset and the report. Nothing is on disk yet."""

    dataset: Dataset
    report: UploadReport


@dataclass(frozen=True)
class UploadInfo:
    """One saved upload, as read from its manifest (for `list_uploads` and the dataset picker)."""

    name: str
    path: Path
    n_users: int
    n_items: int
    n_ratings: int
    rating_scale: tuple[float, float]
    created_at: str
    source: str
    description: str = field(default="")


# --- names and places -------------------------------------------------------------------------------
def user_data_dir() -> Path:
    """The user data folder: `$XDG_DATA_HOME/recengine` (when absolute), else `~/.local/share/recengine`."""
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base / "recengine"


def uploads_dir() -> Path:
    """Where uploads are saved: `$RECENGINE_UPLOADS_DIR`, else `<user_data_dir()>/uploads`."""
    configured = os.environ.get(UPLOADS_DIR_ENV)
    return Path(configured).expanduser() if configured else user_data_dir() / "uploads"


def validate_upload_name(name: object) -> str:
    """The upload name, stripped; ValueError unless it is 1-64 of a-z, 0-9, "_" and "-" (starting
    with a letter or digit: no dots, slashes or path tricks) and not a built-in dataset's name."""
    from recengine.data import movielens

    if not isinstance(name, str):
        raise ValueError(f"an upload name must be text, got {type(name).__name__}")
    cleaned = name.strip()
    if not _NAME.fullmatch(cleaned):
        shown = cleaned if len(cleaned) <= 80 else cleaned[:77] + "..."
        raise ValueError(
            f"upload name {shown!r} is not allowed: use 1-64 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit (e.g. 'my-ratings')"
        )
    reserved = cleaned == movielens.SYNTHETIC
    try:
        movielens.get_release(cleaned)
        reserved = True
    except ValueError:
        pass
    if reserved:
        raise ValueError(f"upload name {cleaned!r} is a built-in dataset's name; choose another, e.g. '{cleaned}-mine'")
    return cleaned


def _folder(name: str, root: str | Path | None) -> Path:
    return (Path(root).expanduser() if root is not None else uploads_dir()) / validate_upload_name(name)


# --- command-line style options ------------------------------------------------------------------------
def parse_column_mapping(text: str) -> dict[str, str]:
    """`"user=userId,item=movieId,rating=stars"` -> {"user": "userId", ...}; ValueError naming the
    allowed roles (user, item, rating, timestamp) for anything else."""
    mapping: dict[str, str] = {}
    for part in (p for p in text.split(",") if p.strip()):
        role, sep, column = part.partition("=")
        role, column = role.strip().lower(), column.strip()
        if not sep or not column:
            raise ValueError(f"columns must look like user=userId,item=movieId,rating=rating; got {part.strip()!r}")
        if role not in _RATING_ROLES:
            raise ValueError(f"column role must be one of {list(_RATING_ROLES)}, got {role!r}")
        mapping[role] = column
    if not mapping:
        raise ValueError("columns is empty; write e.g. user=userId,item=movieId,rating=rating")
    return mapping


def parse_scale(text: str) -> tuple[float, float]:
    """`"0.5,5"` -> (0.5, 5.0); ValueError unless two finite numbers with low < high."""
    parts = [p.strip() for p in str(text).replace(":", ",").split(",")]
    try:
        low, high = (float(p) for p in parts)
    except ValueError:
        raise ValueError(f"scale must be two numbers LOW,HIGH such as 0.5,5 or 1,5; got {text!r}") from None
    return _check_scale((low, high))


def _check_scale(scale: Sequence[float]) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in scale)
    except (TypeError, ValueError):
        raise ValueError(f"scale must be (low, high), two numbers, got {scale!r}") from None
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(f"scale must be two finite numbers with low < high, got ({low:g}, {high:g})")
    return low, high


# --- reading text -------------------------------------------------------------------------------------
def _read_source(source: bytes | str | os.PathLike, label: str | None, limits: UploadLimits) -> tuple[bytes, str]:
    """The raw bytes and a label for messages; the size limit is checked before reading a file."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        label = label or "upload"
    else:
        path = Path(source)
        label = label or path.name
        try:
            size = path.stat().st_size
            if size > limits.max_bytes:
                raise UploadError(_too_large(size, limits), label)
            data = path.read_bytes()
        except OSError as error:
            raise UploadError(f"cannot read {path}: {error.strerror or error}", label) from None
    if len(data) > limits.max_bytes:
        raise UploadError(_too_large(len(data), limits), label)
    return data, label


def _too_large(size: int, limits: UploadLimits) -> str:
    return (
        f"the file is {size / 1e6:,.1f} MB, over the {limits.max_bytes / 1e6:,.1f} MB limit; "
        "split it or raise the limit (UploadLimits(max_bytes=...))"
    )


def _decode(data: bytes, label: str, encoding: str) -> tuple[str, str]:
    """Text and the encoding used; UploadError for binary, UTF-16 or undecodable bytes."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise UploadError("the file is UTF-16 encoded; save it as UTF-8 (or CSV UTF-8 in a spreadsheet) and upload it again", label)
    nul = data.find(b"\x00")
    if nul >= 0:
        raise UploadError(f"this is not a text file (a NUL byte at byte offset {nul}); upload a CSV or TSV text file", label)
    if encoding == "auto":
        name = "utf-8-sig" if data.startswith(b"\xef\xbb\xbf") else "utf-8"
    else:
        name = encoding
    try:
        text = data.decode(name)
    except LookupError:
        raise UploadError(f"unknown encoding {encoding!r}; use 'auto' (UTF-8) or e.g. 'latin-1'", label) from None
    except UnicodeDecodeError as error:
        row = data[: error.start].count(b"\n") + 1
        byte = data[error.start : error.start + 1].hex()
        raise UploadError(
            [Problem(label, row, None, f"byte 0x{byte} at byte offset {error.start} is not valid {name}; save the file as "
                     "UTF-8, or declare its encoding (encoding='latin-1', --encoding latin-1)")],  # fmt: skip
        ) from None
    control = re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", text)
    if control:
        offset = len(text[: control.start()].encode(name, errors="replace"))
        row = text[: control.start()].count("\n") + 1
        raise UploadError(
            [Problem(label, row, None, f"control character {control.group()!r} at byte offset {offset}: this does not look "
                     "like a CSV or TSV text file")],  # fmt: skip
        )
    return text, ("utf-8" if name == "utf-8-sig" else name)


def _first_lines(text: str, count: int = 20) -> list[str]:
    lines = []
    for line in io.StringIO(text, newline=None):
        if line.strip():
            lines.append(line.rstrip("\r\n"))
            if len(lines) >= count:
                break
    return lines


def _sniff_delimiter(lines: list[str], minimum: int) -> str | None:
    """The separator giving the same number (>= minimum) of fields on every sampled line."""
    if lines and "::" in lines[0] and all(line.count("::") == lines[0].count("::") for line in lines):
        if lines[0].count("::") + 1 >= minimum:
            return "::"
    best = None
    for candidate in _DELIMITERS:
        try:
            counts = [len(next(csv.reader([line], delimiter=candidate))) for line in lines]
        except csv.Error:
            continue
        if counts[0] >= minimum and all(c == counts[0] for c in counts):
            return candidate
        if counts[0] >= minimum and best is None:
            best = candidate
    if best is not None:
        return best
    if all(len(line.split()) == len(lines[0].split()) >= minimum for line in lines):
        return r"\s+"
    return None


def _normal(name: str) -> str:
    return re.sub(r"[\s_\-.]+", "", unicodedata.normalize("NFKC", name).strip().lower())


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _read_table(
    text: str, label: str, kind: str, delimiter: str | None, header: bool | None, limits: UploadLimits
) -> tuple[pd.DataFrame, list[str], str, bool, int]:
    """Split text into a frame of stripped strings (all columns) with file row numbers as index.

    Returns (frame without header and blank lines, column names, delimiter, has_header, blank_rows).
    """
    aliases = COLUMN_ALIASES if kind == "ratings" else ITEM_COLUMN_ALIASES
    minimum = 3 if kind == "ratings" else 2
    if not text.strip():
        raise UploadError("the file is empty; expected a header and one rating per row, e.g. 'userId,movieId,rating'", label)
    lines = _first_lines(text)
    if delimiter is None:
        delimiter = _sniff_delimiter(lines, minimum)
        if delimiter is None:
            what = "user, item, rating" if kind == "ratings" else "item id, title"
            raise UploadError(
                [Problem(label, 1, None, f"cannot tell the columns apart: expected at least {minimum} columns ({what}) separated "
                         "by commas, tabs, semicolons or '|'; declare the separator with delimiter=... (--delimiter)")]  # fmt: skip
            )
    n_newlines = text.count("\n")
    if n_newlines > limits.max_rows + 1:
        raise UploadError(f"the file has about {n_newlines:,} rows, over the {limits.max_rows:,} row limit; split it", label)
    body = text
    sep = delimiter
    if delimiter == "::":
        body, sep = text.replace("\t", " ").replace("::", "\t"), "\t"
    try:
        frame = pd.read_csv(
            io.StringIO(body), sep=sep, header=None, dtype=str, na_filter=False, keep_default_na=False,
            skip_blank_lines=False, engine="c", skipinitialspace=True,
        )  # fmt: skip
    except pd.errors.ParserError as error:
        found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(error))
        if found:
            expected, line, saw = found.groups()
            raise UploadError(
                [Problem(label, int(line), None, f"{saw} fields where the first row has {expected}; check the separator and quoting")]
            ) from None
        raise UploadError(f"cannot be read as a table: {error}", label) from None
    except (pd.errors.EmptyDataError, ValueError, csv.Error) as error:
        raise UploadError(f"cannot be read as a table: {error}", label) from None
    frame.index = np.arange(1, len(frame) + 1)
    frame = frame.apply(lambda column: column.str.strip())
    blank = (frame == "").all(axis=1).to_numpy()
    first = int(np.argmax(~blank))  # first non-blank row
    fields = frame.iloc[first].tolist()
    if header is None:
        named = any(_normal(f) in {a for names in aliases.values() for a in names} for f in fields)
        numbers_first = any(_is_number(f) for f in fields)
        second = frame.iloc[first + 1 :][~blank[first + 1 :]].head(1)
        numbers_second = bool(len(second)) and any(_is_number(f) for f in second.iloc[0].tolist())
        header = named or (not numbers_first and numbers_second)
    if header:
        names = [str(f) if f else str(i + 1) for i, f in enumerate(fields)]
        keep = ~blank
        keep[: first + 1] = False
    else:
        names = [str(i + 1) for i in range(frame.shape[1])]
        keep = ~blank
    frame.columns = names
    data = frame[keep]
    if len(data) > limits.max_rows:
        raise UploadError(f"the file has {len(data):,} rows, over the {limits.max_rows:,} row limit; split it", label)
    if data.empty:
        if header:
            raise UploadError([Problem(label, None, None, "the file has a header row but no data rows below it")])
        raise UploadError("the file holds no data rows", label)
    return data, names, delimiter, bool(header), int(blank.sum())


def _map_columns(
    names: list[str], kind: str, overrides: Mapping[str, str] | None, header: bool, label: str
) -> tuple[dict[str, str], list[Problem]]:
    """Role -> column name, guessed from the header (or positions) and overridden by the caller."""
    roles = _RATING_ROLES if kind == "ratings" else _ITEM_ROLES
    aliases = COLUMN_ALIASES if kind == "ratings" else ITEM_COLUMN_ALIASES
    mapping: dict[str, str] = {}
    problems: list[Problem] = []
    overrides = dict(overrides or {})
    for role in overrides:
        if role not in roles:
            problems.append(Problem(label, None, None, f"column role must be one of {list(roles)}, got {role!r}"))
    for role, wanted in overrides.items():
        if role not in roles:
            continue
        wanted = str(wanted).strip()
        match = next((n for n in names if n == wanted), None) or next((n for n in names if _normal(n) == _normal(wanted)), None)
        if match is None and wanted.isdigit() and 1 <= int(wanted) <= len(names):
            match = names[int(wanted) - 1]
        if match is None:
            problems.append(Problem(label, 1 if header else None, None, f"no column {wanted!r} for {role}; the columns are {names}"))
        else:
            mapping[role] = match
    used = set(mapping.values())
    for role in roles:
        if role in mapping or role in overrides:  # a failed override is reported once, not guessed
            continue
        if header:
            match = next((n for n in names if n not in used and _normal(n) in aliases[role]), None)
        else:
            position = roles.index(role)
            match = names[position] if position < len(names) and names[position] not in used else None
        if match is not None:
            mapping[role] = match
            used.add(match)
        elif role in _REQUIRED[kind]:
            known = ", ".join(aliases[role][:4])
            problems.append(
                Problem(label, 1 if header else None, None,
                        f"no {role} column among {names}; name it (e.g. {known}) or map it with columns={{'{role}': ...}} "
                        f"(--columns {role}=NAME)")  # fmt: skip
            )
    return {role: mapping[role] for role in roles if role in mapping}, problems


def _row_problems(label: str, column: str, rows: np.ndarray, values: Sequence[str], message: str) -> list[Problem]:
    """One Problem for the first offending row, counting the others."""
    if rows.size == 0:
        return []
    extra = f" ({rows.size - 1:,} more row(s) like this)" if rows.size > 1 else ""
    return [Problem(label, int(rows[0]), column, message.format(value=values[0]) + extra)]


def _check_ids(frame: pd.DataFrame, column: str, role: str, label: str) -> list[Problem]:
    values = frame[column]
    problems = []
    empty = (values == "").to_numpy()
    problems += _row_problems(label, column, frame.index.to_numpy()[empty], [""], f"empty {role} id")
    long = (values.str.len() > MAX_ID_CHARS).to_numpy()
    problems += _row_problems(label, column, frame.index.to_numpy()[long], [""], f"{role} id longer than {MAX_ID_CHARS} characters")
    return problems


def _typed_ids(values: pd.Series) -> np.ndarray:
    """int64 ids when every id is a plain integer, else str ids."""
    if bool(values.str.fullmatch(_INTEGER).all()):
        return values.astype(np.int64).to_numpy()
    return values.to_numpy().astype(str)


def _numbers(frame: pd.DataFrame, column: str, label: str, what: str) -> tuple[np.ndarray, list[Problem]]:
    """float64 values of a column; problems for empty, non-numeric, NaN and infinite cells."""
    raw = frame[column]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    rows = frame.index.to_numpy()
    problems: list[Problem] = []
    empty = (raw == "").to_numpy()
    problems += _row_problems(label, column, rows[empty], [""], f"empty {what}")
    nan_text = raw.str.lower().str.lstrip("+-").isin(["nan"]).to_numpy()
    problems += _row_problems(label, column, rows[nan_text], raw[nan_text].tolist(), f"{what} {{value!r}} is NaN, not a number")
    bad = np.isnan(values) & ~empty & ~nan_text
    problems += _row_problems(label, column, rows[bad], raw[bad].tolist(), f"{what} {{value!r}} is not a number")
    infinite = np.isinf(values)
    problems += _row_problems(label, column, rows[infinite], raw[infinite].tolist(), f"{what} {{value!r}} is not finite")
    return values, problems


def _timestamps(frame: pd.DataFrame, column: str, label: str) -> tuple[np.ndarray, list[Problem]]:
    """int64 seconds: numbers (floored) when any row holds a number, otherwise ISO 8601 dates on every row."""
    raw = frame[column]
    numeric = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    rows = frame.index.to_numpy()
    finite = np.isfinite(numeric)
    if finite.any() and not finite.all():
        return np.zeros(len(raw), np.int64), _row_problems(label, column, rows[~finite], raw[~finite].tolist(),
                                                           "timestamp {value!r} is not a number of seconds like the other rows")  # fmt: skip
    if finite.all():
        out_of_range = np.abs(numeric) >= 2**62
        if out_of_range.any():
            return np.zeros(len(raw), np.int64), _row_problems(label, column, rows[out_of_range], raw[out_of_range].tolist(),
                                                               "timestamp {value!r} is out of range")  # fmt: skip
        return np.floor(numeric).astype(np.int64), []
    dates = pd.to_datetime(raw, errors="coerce", utc=True, format="ISO8601")
    bad = dates.isna().to_numpy()
    if bad.any():
        return np.zeros(len(raw), np.int64), _row_problems(
            label, column, rows[bad], raw[bad].tolist(),
            "timestamp {value!r} is neither seconds since 1970 nor a date like 2024-05-31 or 2024-05-31T12:00:00",
        )  # fmt: skip
    seconds = (dates - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return seconds.to_numpy(dtype=np.int64), []


def _infer_scale(ratings: np.ndarray) -> tuple[float, float] | None:
    low, high = float(ratings.min()), float(ratings.max())
    if low >= 1 and high <= 5 and bool((ratings == np.round(ratings)).all()):
        return 1.0, 5.0
    if low >= 0.5 and high <= 5:
        return 0.5, 5.0
    return None


# --- the items file ----------------------------------------------------------------------------------
def _read_items(
    source: bytes | str | os.PathLike, label: str | None, columns: Mapping[str, str] | None, encoding: str, limits: UploadLimits
) -> tuple[pd.DataFrame, dict[str, str], str, list[Problem]]:
    """Validated items table (index = file rows) with columns item, title, genres, year (str)."""
    data, label = _read_source(source, label, limits)
    text, _ = _decode(data, label, encoding)
    frame, names, _, header, _ = _read_table(text, label, "items", None, None, limits)
    mapping, problems = _map_columns(names, "items", columns, header, label)
    if problems:
        return frame, mapping, label, problems
    problems += _check_ids(frame, mapping["item"], "item", label)
    ids = frame[mapping["item"]]
    repeated = ids.duplicated(keep="first").to_numpy() & (ids != "").to_numpy()
    if repeated.any():
        first_row = {value: row for row, value in zip(frame.index[::-1], ids[::-1])}
        rows = frame.index.to_numpy()[repeated]
        value = ids[repeated].iloc[0]
        extra = f" ({rows.size - 1:,} more repeated id(s))" if rows.size > 1 else ""
        problems.append(Problem(label, int(rows[0]), mapping["item"], f"item {value!r} is listed again (first on row {first_row[value]}){extra}"))
    if "year" in mapping:
        years = frame[mapping["year"]]
        given = (years != "").to_numpy()
        bad = given & ~years.str.fullmatch(r"\d{1,4}").to_numpy()
        problems += _row_problems(label, mapping["year"], frame.index.to_numpy()[bad], years[bad].tolist(),
                                  "year {value!r} is not a whole number like 1999")  # fmt: skip
    return frame, mapping, label, problems


def _catalogue(
    item_ids: np.ndarray, items: np.ndarray, ratings: np.ndarray, table: pd.DataFrame | None, mapping: dict[str, str]
) -> tuple[pd.DataFrame, int, int]:
    """The catalogue for the rated items, with titles from the items table where it has them."""
    if table is None:
        return make_catalogue(item_ids, None, None, items, ratings), 0, 0
    keys = table[mapping["item"]]
    if item_ids.dtype.kind in "iu":
        integer = keys.str.fullmatch(r"[+-]?\d{1,18}").to_numpy()
        lookup = dict(zip(keys[integer].astype(np.int64).tolist(), np.flatnonzero(integer).tolist()))
    else:
        lookup = dict(zip(keys.tolist(), range(len(keys))))
    rows = [lookup.get(raw, -1) for raw in item_ids.tolist()]
    titles_column = table[mapping["title"]].tolist()
    genres_column = table[mapping["genres"]].tolist() if "genres" in mapping else None
    years_column = table[mapping["year"]].tolist() if "year" in mapping else None
    titles, genres, years = [], [], []
    from recengine.data.dataset import parse_title

    for row, raw in zip(rows, item_ids.tolist()):
        title = titles_column[row] if row >= 0 and titles_column[row] else f"Item {raw}"
        titles.append(title)
        names = genres_column[row].split("|") if row >= 0 and genres_column is not None else []
        genres.append(tuple(g.strip() for g in names if g.strip().lower() not in _NO_GENRES))
        year = years_column[row] if row >= 0 and years_column is not None else ""
        years.append(int(year) if year else parse_title(title)[1])
    untitled = sum(row < 0 for row in rows)
    unrated = len(table) - (len(rows) - untitled)
    return make_catalogue(item_ids, titles, genres, items, ratings, years=years), untitled, unrated


# --- parse ---------------------------------------------------------------------------------------------
def parse_upload(
    ratings: bytes | str | os.PathLike,
    *,
    name: str = "upload",
    items: bytes | str | os.PathLike | None = None,
    columns: Mapping[str, str] | None = None,
    item_columns: Mapping[str, str] | None = None,
    scale: Sequence[float] | None = None,
    encoding: str = "auto",
    delimiter: str | None = None,
    header: bool | None = None,
    limits: UploadLimits = UploadLimits(),
    filename: str | None = None,
    items_filename: str | None = None,
) -> ParsedUpload:
    """Read and validate a ratings file (and an optional items file) into a Dataset in memory.

    ratings / items: the file's bytes (e.g. a Streamlit upload's `getvalue()`) or a path;
    filename / items_filename label the bytes in messages. name: the Dataset's name.
    columns / item_columns: role -> header name or 1-based position, overriding the guesses
    (roles: user, item, rating, timestamp / item, title, genres, year). scale: (low, high), else
    inferred (see the module docstring). encoding: "auto" (UTF-8) or a codec name such as
    "latin-1". delimiter / header: None to sniff. limits: size limits.

    Returns `ParsedUpload(dataset, report)`: users and items get contiguous indices in sorted
    raw-id order, ratings float32 on the scale, timestamps int64 (0 without a timestamp column).
    Raises `UploadError` (a ValueError) listing every problem with its row and column; nothing
    is returned half-built.
    """
    if scale is not None:
        scale = _check_scale(scale)
    if delimiter is not None and delimiter not in (*_DELIMITERS, "::"):
        raise ValueError(f"delimiter must be one of {[*_DELIMITERS, '::']} or None to guess, got {delimiter!r}")
    data, label = _read_source(ratings, filename, limits)
    text, used_encoding = _decode(data, label, encoding)
    frame, names, delimiter, has_header, blank_rows = _read_table(text, label, "ratings", delimiter, header, limits)
    mapping, problems = _map_columns(names, "ratings", columns, has_header, label)
    table = item_mapping = items_label = None
    if items is not None:
        table, item_mapping, items_label, item_problems = _read_items(items, items_filename, item_columns, encoding, limits)
        problems += item_problems
    if any(p.file == label for p in problems):
        raise UploadError(problems)
    rows = frame.index.to_numpy()
    problems += _check_ids(frame, mapping["user"], "user", label)
    problems += _check_ids(frame, mapping["item"], "item", label)
    values, rating_problems = _numbers(frame, mapping["rating"], label, "rating")
    problems += rating_problems
    timestamps = np.zeros(len(frame), dtype=np.int64)
    if "timestamp" in mapping:
        timestamps, time_problems = _timestamps(frame, mapping["timestamp"], label)
        problems += time_problems
    scale_inferred = scale is None
    if not rating_problems:
        if scale is None:
            scale = _infer_scale(values)
            if scale is None:
                problems.append(
                    Problem(label, None, mapping["rating"],
                            f"ratings run from {values.min():g} to {values.max():g}, which is neither 1-5 nor 0.5-5; declare "
                            "the scale with scale=(low, high) (--scale LOW,HIGH)")  # fmt: skip
                )
        if scale is not None:
            low, high = scale
            outside = (values < low) | (values > high)
            raw = frame[mapping["rating"]]
            problems += _row_problems(label, mapping["rating"], rows[outside], raw[outside].tolist(),
                                      f"rating {{value}} is outside the scale {low:g}-{high:g}")  # fmt: skip
    if problems or scale is None:  # no problems means the scale is known
        raise UploadError(problems)

    user_ids, users = np.unique(_typed_ids(frame[mapping["user"]]), return_inverse=True)
    item_ids, items_idx = np.unique(_typed_ids(frame[mapping["item"]]), return_inverse=True)
    # Keep the latest rating per (user, item): sort by pair, then time, then file order; take the last.
    pair = users.astype(np.int64) * len(item_ids) + items_idx
    order = np.lexsort((np.arange(len(pair)), timestamps, pair))
    last = np.ones(len(order), dtype=bool)
    last[:-1] = pair[order][1:] != pair[order][:-1]
    keep = np.sort(order[last])  # back to file order
    duplicates = len(pair) - len(keep)
    users, items_idx, values, timestamps = users[keep], items_idx[keep], values[keep], timestamps[keep]
    # Users or items whose every row was a duplicate still have a row left, so the maps stay dense.
    catalogue, untitled, unrated = _catalogue(item_ids, items_idx, values, table, item_mapping or {})
    dataset = Dataset.from_arrays(
        name, users, items_idx, values, timestamps,
        user_map=IdMap(user_ids), item_map=IdMap(item_ids), catalogue=catalogue, rating_scale=scale,
    )  # fmt: skip
    report = UploadReport(
        source=label, encoding=used_encoding, delimiter=delimiter, header=has_header, columns=mapping,
        rating_scale=scale, scale_inferred=scale_inferred, n_rows=len(frame), n_ratings=len(dataset),
        n_users=dataset.n_users, n_items=dataset.n_items, duplicates_dropped=int(duplicates), blank_rows=blank_rows,
        items_source=items_label, items_untitled=untitled, items_unrated=unrated,
    )  # fmt: skip
    return ParsedUpload(dataset, report)


# --- save, list, load ------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _text_array(values: Sequence[str]) -> np.ndarray:
    return np.array(list(values), dtype=str) if len(values) else np.zeros(0, dtype="<U1")


def save_upload(parsed: ParsedUpload, name: str, *, overwrite: bool = False, root: str | Path | None = None) -> UploadInfo:
    """Save a parsed upload as `<root>/<name>/` (root defaults to `uploads_dir()`), atomically.

    The folder is written under a temporary name and renamed into place, so a crash leaves either
    the previous upload or the new one, never a mix. An existing upload of that name is an
    UploadError unless `overwrite`. Returns the saved upload's `UploadInfo`.
    """
    from recengine import __version__

    folder = _folder(name, root)
    name = folder.name
    if folder.exists() and not overwrite:
        raise UploadError(f"an upload called {name!r} already exists; choose another name or replace it (overwrite=True, --force)", name)
    folder.parent.mkdir(parents=True, exist_ok=True)
    dataset, report = parsed.dataset, parsed.report
    catalogue = dataset.catalogue
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=folder.parent))
    try:
        years = catalogue["year"].to_numpy(dtype=np.float64, na_value=np.nan)
        arrays = {
            "users": dataset.users, "items": dataset.items, "ratings": dataset.ratings, "timestamps": dataset.timestamps,
            "user_ids": dataset.user_map.ids, "item_ids": dataset.item_map.ids,
            "titles": _text_array(catalogue["title"].tolist()),
            "genres": _text_array(["|".join(g) for g in catalogue["genres"]]),
            "years": np.where(np.isnan(years), -1, years).astype(np.int32),
        }  # fmt: skip
        with open(staging / "ratings.npz", "wb") as handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        manifest = {
            "format": STORAGE_FORMAT,
            "name": name,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "recengine": __version__,
            "rating_scale": list(dataset.rating_scale),
            "n_users": dataset.n_users,
            "n_items": dataset.n_items,
            "n_ratings": len(dataset),
            "report": {**report.__dict__, "rating_scale": list(report.rating_scale)},
            "files": {"ratings.npz": {"bytes": (staging / "ratings.npz").stat().st_size, "sha256": _sha256(staging / "ratings.npz")}},
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
        old = None
        if folder.exists():
            old = folder.parent / f".{name}.{os.getpid()}.{time.time_ns()}.old"
            os.rename(folder, old)
        try:
            os.rename(staging, folder)
        except OSError as error:
            if old is not None and not folder.exists():
                os.rename(old, folder)
            raise UploadError(f"could not save the upload {name!r}: {error}", name) from None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return _info(folder, manifest)


def import_upload(
    ratings: bytes | str | os.PathLike, name: str, *, overwrite: bool = False, root: str | Path | None = None, **options
) -> tuple[UploadInfo, UploadReport]:
    """`parse_upload` then `save_upload` under `name` (checked first, before any parsing).

    `options` are `parse_upload`'s keywords (items, columns, scale, encoding, ...).
    Returns (the saved upload's info, the report). Raises UploadError / ValueError, saving nothing.
    """
    folder = _folder(name, root)
    if folder.exists() and not overwrite:
        raise UploadError(f"an upload called {folder.name!r} already exists; choose another name or replace it (overwrite=True, --force)", folder.name)
    parsed = parse_upload(ratings, name=folder.name, **options)
    return save_upload(parsed, folder.name, overwrite=overwrite, root=root), parsed.report


def _info(folder: Path, manifest: dict) -> UploadInfo:
    low, high = manifest["rating_scale"]
    report = manifest.get("report", {})
    source = str(report.get("source", ""))
    description = (
        f"uploaded {manifest['created_at'][:10]} from {source}: {manifest['n_ratings']:,} ratings from "
        f"{manifest['n_users']:,} users on {manifest['n_items']:,} items (scale {low:g}-{high:g})"
    )
    return UploadInfo(
        name=str(manifest["name"]), path=folder, n_users=int(manifest["n_users"]), n_items=int(manifest["n_items"]),
        n_ratings=int(manifest["n_ratings"]), rating_scale=(float(low), float(high)),
        created_at=str(manifest["created_at"]), source=source, description=description,
    )  # fmt: skip


def _read_manifest(folder: Path) -> dict:
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        if not isinstance(manifest, dict) or manifest.get("format") != STORAGE_FORMAT or manifest.get("name") != folder.name:
            raise ValueError("unexpected manifest contents")
        _info(folder, manifest)  # every field present and typed
        return manifest
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UploadError(
            f"upload {folder.name!r} at {folder} is damaged or from another version ({error}); import it again with "
            f"`python -m recengine import FILE --name {folder.name} --force`", folder.name,
        ) from None  # fmt: skip


def list_uploads(root: str | Path | None = None) -> list[UploadInfo]:
    """Every saved upload (sorted by name); damaged folders and leftovers of interrupted saves are skipped."""
    base = Path(root).expanduser() if root is not None else uploads_dir()
    if not base.is_dir():
        return []
    infos = []
    for folder in sorted(base.iterdir()):
        if folder.name.startswith(".") or not folder.is_dir() or not _NAME.fullmatch(folder.name):
            continue
        try:
            infos.append(_info(folder, _read_manifest(folder)))
        except UploadError:
            continue
    return infos


def upload_names(root: str | Path | None = None) -> list[str]:
    """Names of the saved uploads (what `load_upload` accepts)."""
    return [info.name for info in list_uploads(root)]


def is_upload(name: str, root: str | Path | None = None) -> bool:
    """Whether `name` is a saved upload (False for invalid names, never raises)."""
    try:
        return (_folder(name, root) / "manifest.json").is_file()
    except ValueError:
        return False


@dataclass(frozen=True)
class UploadPreview:
    """The first rows of a ratings file as the importer reads it, its column names and the guessed
    role of each (user, item, rating, timestamp)."""

    rows: pd.DataFrame
    columns: list[str]
    guessed: dict[str, str]


def preview_upload(data: bytes, filename: str, encoding: str = "auto", rows: int = 8) -> UploadPreview:
    """How `parse_upload` reads `data`: its first `rows` rows (indexed by file row number), the
    column names and the guessed mapping, through the parser's own reading steps. UploadError
    (naming the row and column) when the file cannot be read as a table at all."""
    limits = UploadLimits()
    _read_source(data, filename, limits)  # size limit first
    text, _ = _decode(data, filename, encoding)
    frame, names, _, has_header, _ = _read_table(text, filename, "ratings", None, None, limits)
    guessed, _ = _map_columns(names, "ratings", None, has_header, filename)
    head = frame.head(rows).copy()
    head.index.name = "row"
    return UploadPreview(head, names, guessed)


def upload_fingerprint(name: str, root: str | Path | None = None) -> str:
    """16 hex digits of the SHA-256 the manifest of upload `name` records for its data file: it
    changes whenever the upload is replaced (the store keys models by it). "" when `name` is no
    upload or its manifest is unreadable (loading it then fails with the upload's own message)."""
    try:
        manifest = _read_manifest(_folder(name, root))
        return str(manifest["files"]["ratings.npz"]["sha256"])[:16]
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def load_upload(name: str, root: str | Path | None = None) -> Dataset:
    """The saved upload `name` as a Dataset, after checking the data file's size and SHA-256.

    Raises ValueError for an invalid name, FileNotFoundError (listing the uploads) when there is
    no such upload, and UploadError when the folder is damaged (with the command that fixes it).
    """
    folder = _folder(name, root)
    if not folder.is_dir():
        known = upload_names(root)
        raise FileNotFoundError(f"no upload called {folder.name!r} in {folder.parent}; uploads: {known or 'none yet'}")
    manifest = _read_manifest(folder)
    data_file = folder / "ratings.npz"
    fix = f"import it again with `python -m recengine import FILE --name {folder.name} --force`"
    try:
        expected = manifest["files"]["ratings.npz"]
        if data_file.stat().st_size != expected["bytes"] or _sha256(data_file) != expected["sha256"]:
            raise UploadError(f"upload {folder.name!r}: {data_file} was changed or truncated (size or SHA-256 differs); {fix}", folder.name)
        with np.load(data_file, allow_pickle=False) as stored:
            arrays = {key: stored[key] for key in stored.files}
        n_items = len(arrays["item_ids"])
        years = [None if y < 0 else int(y) for y in arrays["years"].tolist()]
        genres = [tuple(g.split("|")) if g else () for g in arrays["genres"].tolist()]
        catalogue = make_catalogue(arrays["item_ids"], arrays["titles"].tolist(), genres, arrays["items"], arrays["ratings"], years=years)
        if len(catalogue) != n_items:
            raise ValueError(f"{len(catalogue)} titles for {n_items} items")
        low, high = manifest["rating_scale"]
        return Dataset.from_arrays(
            folder.name, arrays["users"], arrays["items"], arrays["ratings"], arrays["timestamps"],
            user_map=IdMap(arrays["user_ids"]), item_map=IdMap(arrays["item_ids"]), catalogue=catalogue,
            rating_scale=(float(low), float(high)),
        )  # fmt: skip
    except UploadError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UploadError(f"upload {folder.name!r} at {folder} is damaged ({error}); {fix}", folder.name) from None


def delete_upload(name: str, root: str | Path | None = None) -> None:
    """Remove the saved upload `name` (FileNotFoundError when there is none). Trained models of it
    stay in the models folder until the store removes them."""
    folder = _folder(name, root)
    if not folder.is_dir():
        raise FileNotFoundError(f"no upload called {folder.name!r} in {folder.parent}")
    trash = folder.parent / f".{folder.name}.{os.getpid()}.{time.time_ns()}.deleted"
    os.rename(folder, trash)  # atomic: the name disappears at once, then the files go
    shutil.rmtree(trash, ignore_errors=True)
