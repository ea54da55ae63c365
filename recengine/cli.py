"""The command line: `python -m recengine <command> ...` (see `python -m recengine --help`).

Commands: `datasets`, `download`, `train`, `evaluate`, `similar`, `recommend`, `import`
(your own ratings file as a dataset) and `profiles` (saved profiles). Every model
command goes through the `ModelStore`, so a model trained once (by the command line or the
app) is reused from `models/` afterwards.

Exit codes: 0 success; 2 bad arguments or input (unknown dataset, model, split or title,
missing data, unreadable ratings file, ...), reported as one `error:` message without a
traceback; 1 when training or a download fails; 130 when interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Sequence, TextIO

from recengine.data import movielens
from recengine.data.dataset import Dataset
from recengine.models.base import (
    EpochEvent,
    Recommender,
    TrainingError,
    clip_repr,
    config_field_docs,
    get_model_class,
    model_names,
)
from recengine.search import TitleMatch, TitleSearch
from recengine.store import ModelKey, ModelStore

__all__ = ["main", "build_parser", "describe_hyper_parameters"]

PROG = "python -m recengine"
DEFAULT_DATASET = "ml-100k"
DEFAULT_MODEL = "mf"
DEFAULT_SPLIT = "random"
DEFAULT_SEED = 42
_TITLE_WIDTH = 60
#: Largest `recommend --ratings` file read (a profile of every MovieLens movie is far smaller).
MAX_RATINGS_FILE_BYTES = 1_000_000


class UsageError(Exception):
    """Bad arguments or input: printed as `error: ...` with exit code 2."""


# --- hyper-parameter help ---------------------------------------------------------------------
def describe_hyper_parameters() -> str:
    """The hyper-parameters of every registered model: name, type, default and meaning."""
    blocks = []
    for name in model_names():
        config_cls = get_model_class(name).Config
        docs = config_field_docs(config_cls)
        rows = []
        for spec in dataclasses.fields(config_cls):
            kind = spec.type if isinstance(spec.type, str) else getattr(spec.type, "__name__", str(spec.type))
            default = spec.default if spec.default is not dataclasses.MISSING else "(required)"
            rows.append((f"{spec.name}={default}", kind, docs.get(spec.name, "")))
        width = max((len(row[0]) for row in rows), default=0)
        kind_width = max((len(row[1]) for row in rows), default=0)
        lines = [f"  {name} ({config_cls.__name__}):"]
        lines += [f"    {left:<{width}}  {kind:<{kind_width}}  {doc}".rstrip() for left, kind, doc in rows]
        blocks.append("\n".join(lines))
    return "hyper-parameters per model (pass as --set name=value):\n" + "\n".join(blocks)


# --- the parser ---------------------------------------------------------------------------------
_SPLIT_HELP = (
    "how ratings are divided into train and test: random (80/20), user (20%% of users held out), "
    "last (each user's last rating), or an ml-100k fold u1..u5, ua, ub (default: random)"
)
_SET_HELP = (
    "a model hyper-parameter, repeatable (e.g. --set epochs=20 --set embedding_dim=32); validated "
    "against the model's Config; the same values find the same trained model again"
)
_EXAMPLES = f"""examples:
  {PROG} datasets
  {PROG} download ml-100k
  {PROG} train --dataset ml-100k --model mf --set epochs=20
  {PROG} evaluate --dataset ml-100k --split u1 --json
  {PROG} similar --dataset ml-100k "forest gump" -k 5
  {PROG} recommend --dataset ml-100k --ratings my_ratings.json

run a command with --help for its options."""
_DESCRIPTIONS = {
    "datasets": "List every dataset name, whether it is on disk (and where), and how to get the missing ones.",
    "download": (
        "Download a MovieLens release from files.grouplens.org, verify its size and checksum and unpack it "
        "into the user cache ($XDG_CACHE_HOME/recengine, default ~/.cache/recengine). Progress goes to stderr."
    ),
    "train": (
        "Train a model on the train part of a split, evaluate it on the test part and save it under the "
        "models folder. A saved model with the same dataset, split, seed, model and hyper-parameters is "
        "reused unless --force. Training progress goes to stderr."
    ),
    "evaluate": (
        "Report the test metrics of a model: RMSE and MAE for rating models, and the full-ranking metrics "
        "precision@10, recall@10, ndcg@10, map@10, hit@10 and MRR; plus fit_seconds. Trains (and saves) "
        "the model first when needed."
    ),
    "similar": (
        "Find a movie by (fuzzy) title and list the movies closest to it in the model's item space "
        "(cosine similarity). Trains the model first when needed."
    ),
    "recommend": (
        'Recommend movies for a new user described by a JSON file of ratings, e.g. {"Toy Story (1995)": '
        '4.5, "forest gump": 5, "50": 3}: keys are titles (matched fuzzily; ambiguous ones must be written '
        "out) or the dataset's raw item ids (strings of digits, e.g. MovieLens movieId); values are ratings "
        "on the dataset's scale. The user is folded into a trained model without retraining."
    ),
}
_SUMMARIES = {
    "datasets": "list the datasets and where they were found",
    "download": "download and unpack a MovieLens release",
    "train": "train a model (or reuse the saved one) and show its test metrics",
    "evaluate": "test metrics of a model (trained first when needed)",
    "similar": "movies similar to a title",
    "recommend": "recommendations for your own ratings",
}


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    """--dataset, --model, --split, --seed, --set, --device, --models-dir."""
    add = parser.add_argument
    add("--dataset", "-d", default=DEFAULT_DATASET, metavar="NAME",
        help=f"dataset name, see `{PROG} datasets` (default: {DEFAULT_DATASET})")  # fmt: skip
    add("--model", "-m", default=DEFAULT_MODEL, metavar="NAME",
        help=f"model family (default: {DEFAULT_MODEL}); each one's hyper-parameters are listed below")  # fmt: skip
    add("--split", "-s", default=DEFAULT_SPLIT, metavar="NAME", help=_SPLIT_HELP)
    add("--seed", type=int, default=DEFAULT_SEED, metavar="N", help=f"seed of the random and user splits (default: {DEFAULT_SEED})")
    add("--set", dest="hyper", action="append", default=[], metavar="NAME=VALUE", help=_SET_HELP)
    add("--device", default="auto", choices=["auto", "cpu", "cuda"],
        help="where to train and score; auto picks CUDA when available (default: auto)")  # fmt: skip
    add("--models-dir", type=Path, default=None, metavar="DIR",
        help="folder of trained models (default: $RECENGINE_MODELS_DIR, else <repo>/models)")  # fmt: skip


def _add_output_options(parser: argparse.ArgumentParser, what: str, *, with_k: bool = False) -> None:
    """--json (and -k for the commands that list movies)."""
    if with_k:
        parser.add_argument("-k", "--k", dest="k", type=int, default=10, metavar="K", help="how many movies to list (default: 10)")
    parser.add_argument("--json", action="store_true", help=f"print {what} as one JSON object on stdout instead of a table")


def _hyper_epilog() -> str:
    """The hyper-parameter list of the model commands' help (a broken model module must not break --help)."""
    try:
        return describe_hyper_parameters()
    except Exception as error:
        return f"(hyper-parameters unavailable: {error})"


class _CommandParser(argparse.ArgumentParser):
    """A command's parser; with `with_hyper` its help ends with the hyper-parameter list, built
    only when the help is shown (reading every Config's source costs 0.1-0.4 s that the other
    calls need not pay)."""

    def __init__(self, *args: Any, with_hyper: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.with_hyper = with_hyper

    def format_help(self) -> str:
        if self.with_hyper and self.epilog is None:
            self.epilog = _hyper_epilog()
        return super().format_help()


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of every command (hyper-parameters listed in the model commands' help)."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Movie recommendations from MovieLens ratings: data, training, evaluation and queries.",
        epilog=_EXAMPLES,
        formatter_class=formatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_CommandParser)

    def command(name: str, with_hyper: bool = False) -> argparse.ArgumentParser:
        description = textwrap.fill(_DESCRIPTIONS[name], width=88)
        return commands.add_parser(
            name, help=_SUMMARIES[name], description=description, formatter_class=formatter, with_hyper=with_hyper
        )

    command("datasets")

    download = command("download")
    download.add_argument("name", metavar="NAME", help="release name, e.g. ml-100k, ml-latest-small, ml-1m, ml-25m")
    download.add_argument("--force", action="store_true", help="download again even when the release is already on disk")

    train = command("train", with_hyper=True)
    _add_model_options(train)
    train.add_argument("--force", action="store_true", help="retrain even when a saved model exists (replaces it)")
    train.add_argument("--distributed", action="store_true",
                       help="train data-parallel on every process torchrun starts (gloo on CPU, nccl with one GPU per "
                            "process); rank 0 reports and saves. E.g. `torchrun --nproc_per_node=2 -m recengine train "
                            "--distributed ...`")  # fmt: skip
    _add_output_options(train, "the metrics and fit_seconds")

    evaluate = command("evaluate", with_hyper=True)
    _add_model_options(evaluate)
    _add_output_options(evaluate, "the metrics and fit_seconds")

    similar = command("similar", with_hyper=True)
    similar.add_argument("title", metavar="TITLE", help='title text, typos allowed, e.g. "forest gump" or "Star Wars (1977)"')
    _add_model_options(similar)
    _add_output_options(similar, "the match, the other candidates and the similar movies", with_k=True)

    recommend = command("recommend", with_hyper=True)
    recommend.add_argument("--ratings", "-r", type=Path, required=True, metavar="FILE.json",
                           help='JSON object {"title or item id": rating, ...}')  # fmt: skip
    _add_model_options(recommend)
    _add_output_options(recommend, "the recommended movies", with_k=True)
    _add_profile_commands(commands, formatter)
    return parser


# --- output helpers ---------------------------------------------------------------------------------
def _clip(text: str, width: int = _TITLE_WIDTH) -> str:
    """A table cell cut to `width` characters (ending in "…")."""
    return text if len(text) <= width else text[: width - 1] + "…"


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _echo(value: Any, width: int = 80) -> str:
    """User input quoted for an error message: `repr` (control characters escaped), at most
    `width` characters (ending in "…"). Every message that repeats input uses it."""
    return clip_repr(value, width)


def _echo_path(path: Path | str, width: int = 120) -> str:
    """A path from the command line for a message: control characters dropped, at most `width`
    characters, keeping its end (the file name): "…/pytest-7/test0/ratings.json"."""
    text = _CONTROL.sub("", str(path))
    return text if len(text) <= width else "…" + text[len(text) - width + 1 :]


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[bool] | None = None) -> str:
    """Rows as aligned text columns under a header and a rule; `right[i]` right-aligns column i."""
    cells = [[str(h) for h in headers]] + [[str(value) for value in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    right = list(right) if right is not None else [False] * len(headers)

    def line(row: Sequence[str]) -> str:
        parts = [cell.rjust(w) if r else cell.ljust(w) for cell, w, r in zip(row, widths, right)]
        return "  ".join(parts).rstrip()

    return "\n".join([line(cells[0]), line(["-" * w for w in widths]), *(line(row) for row in cells[1:])])


def _json_id(raw: Any) -> Any:
    """A raw id as a JSON value (numpy ints become ints)."""
    return raw.item() if hasattr(raw, "item") else raw


def _print_json(payload: Any, out: TextIO) -> None:
    out.write(json.dumps(payload, indent=2, ensure_ascii=False, allow_nan=False) + "\n")


class _Progress:
    """One stderr line per training run, rewritten each epoch on a terminal (a line per epoch otherwise)."""

    def __init__(self, label: str, stream: TextIO) -> None:
        self.label, self.stream = label, stream
        self.started = time.perf_counter()
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.shown = False

    def __call__(self, event: EpochEvent) -> None:
        done = event.epoch / event.epochs if event.epochs else 0.0
        bar = "#" * round(20 * done) + "." * (20 - round(20 * done))
        figures = " ".join(f"{name} {value:.4f}" for name, value in event.metrics.items())
        text = (
            f"{self.label} [{bar}] epoch {event.epoch}/{event.epochs}  loss {event.loss:.4f}"
            f"{'  ' + figures if figures else ''}  elapsed {time.perf_counter() - self.started:.1f}s"
        )
        self.stream.write(("\r" + text + "\x1b[K") if self.tty else text + "\n")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown and self.tty:
            self.stream.write("\n")
            self.stream.flush()


# --- shared steps ---------------------------------------------------------------------------------
def _parse_hyper(pairs: Sequence[str]) -> dict[str, str]:
    hyper: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--set expects NAME=VALUE (e.g. --set epochs=20), got {_echo(pair)}")
        hyper[name.strip()] = value.strip()
    return hyper


def _store(args: argparse.Namespace) -> ModelStore:
    return ModelStore(args.models_dir, device=args.device)


def _key(store: ModelStore, args: argparse.Namespace) -> ModelKey:
    """The validated ModelKey; also loads the dataset and makes the split so that a missing
    dataset or a split the dataset lacks is reported before any training."""
    if args.seed < 0:
        raise UsageError(f"--seed must be a non-negative integer, got {args.seed}")
    key = store.key(args.dataset, args.model, args.split, args.seed, hyper=_parse_hyper(args.hyper))
    store.split(key.dataset, key.split, key.seed)
    return key


def _model(store: ModelStore, key: ModelKey, stderr: TextIO) -> Recommender:
    """The trained model of `key`, training it (with a progress line on stderr) when needed."""
    cached = store.get(key)
    if cached is not None:
        return cached
    progress = _Progress(f"training {key.model} on {key.dataset}/{key.split}", stderr)
    try:
        return store.get_or_train(key, on_epoch=progress)
    finally:
        progress.close()


def _metrics_payload(store: ModelStore, key: ModelKey, model: Recommender) -> dict[str, float | None]:
    """The test metrics plus fit_seconds; a non-finite figure becomes None (JSON null)."""
    metrics = {**(store.metrics(key) or {}), "fit_seconds": float(model.fit_seconds)}
    return {name: value if math.isfinite(value) else None for name, value in metrics.items()}


def _metrics_table(payload: dict[str, float | None]) -> str:
    rows = [(name, "n/a" if value is None else f"{value:.4f}") for name, value in payload.items()]
    return format_table(["metric", "value"], rows, right=[False, True])


# --- commands -------------------------------------------------------------------------------------
def _cmd_datasets(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    rows = []
    for info in movielens.available_datasets():
        if info.generated:
            where = "generated on demand"
        elif info.path is not None:
            where = str(info.path)
        else:
            where = f"not found — download with `{PROG} download {info.name}`"
        ratings = f"{info.n_ratings:,}" if info.n_ratings else "-"
        size = f"{info.download_bytes / 1e6:,.0f} MB" if info.download_bytes else "-"
        rows.append((info.name, ratings, size, where))
    out.write(format_table(["dataset", "ratings", "download", "where"], rows, right=[False, True, True, False]) + "\n")
    return 0


def _cmd_download(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    release = movielens.get_release(args.name)
    found = movielens.find_dataset(release.name)
    if found is not None and not args.force:
        out.write(f"{release.name} is already available at {found}\n")
        return 0
    tty = bool(getattr(err, "isatty", lambda: False)())
    last_shown = [-1.0]

    def progress(done: int, total: int | None) -> None:
        if total:
            share = done / total
            if not tty and share - last_shown[0] < 0.1 and done < total:
                return
            last_shown[0] = share
            bar = "#" * round(30 * share) + "." * (30 - round(30 * share))
            text = f"downloading {release.name} [{bar}] {share:4.0%} {done / 1e6:.1f}/{total / 1e6:.1f} MB"
        else:
            text = f"downloading {release.name} {done / 1e6:.1f} MB"
        err.write(("\r" + text + "\x1b[K") if tty else text + "\n")
        err.flush()

    path = movielens.download_dataset(release.name, progress=progress, force=args.force)
    if tty:
        err.write("\n")
    out.write(f"{release.name} is ready at {path}\n")
    return 0


def _cmd_train(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.distributed:
        return _train_distributed(args, out, err)
    store = _store(args)
    key = _key(store, args)
    if args.force:
        store.delete(key)
    reused = store.get(key) is not None
    model = _model(store, key, err)
    payload = _metrics_payload(store, key, model)
    if args.json:
        _print_json(payload, out)
        return 0
    verb = "reused the saved model" if reused else f"trained in {model.fit_seconds:.1f}s"
    out.write(f"{key.describe()}: {verb}\nsaved at {store.path(key)}\n\n{_metrics_table(payload)}\n")
    return 0


def _train_distributed(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`train --distributed`, run by every process torchrun started: all of them train, rank 0
    prints the progress and the result and writes the artefact, the others print nothing."""
    from recengine import distributed

    try:
        context = distributed.init_distributed(args.device)
    except RuntimeError as error:
        raise UsageError(str(error)) from None
    try:
        store = ModelStore(args.models_dir, device=context.device)
        key = _key(store, args)
        reused = context.is_main and not args.force and store.get(key) is not None
        label = f"training {key.model} on {key.dataset}/{key.split} ({context.world_size} processes, {context.backend})"
        progress = _Progress(label, err) if context.is_main else None
        try:
            model = store.train_distributed(key, on_epoch=progress, force=args.force)
        finally:
            if progress is not None:
                progress.close()
        if model is None:  # not rank 0
            return 0
        payload = _metrics_payload(store, key, model)
        if args.json:
            _print_json(payload, out)
            return 0
        verb = "reused the saved model" if reused else f"trained in {model.fit_seconds:.1f}s on {context.world_size} processes"
        out.write(f"{key.describe()}: {verb}\nsaved at {store.path(key)}\n\n{_metrics_table(payload)}\n")
        return 0
    finally:
        distributed.shutdown()


def _cmd_evaluate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    store = _store(args)
    key = _key(store, args)
    model = _model(store, key, err)
    payload = _metrics_payload(store, key, model)
    if args.json:
        _print_json(payload, out)
    else:
        out.write(f"{key.describe()}\n\n{_metrics_table(payload)}\n")
    return 0


def _check_k(k: int) -> int:
    if k < 1:
        raise UsageError(f"-k must be at least 1, got {k}")
    return k


def _search(store: ModelStore, dataset_name: str) -> TitleSearch:
    return TitleSearch(store.dataset(dataset_name).catalogue)


def _suggest(candidates: Sequence[TitleMatch]) -> str:
    return ", ".join(f"{c.title!r}" for c in candidates[:3])


def _cmd_similar(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    k = _check_k(args.k)
    if not args.title.strip():
        raise UsageError('the title is empty; give some title text, e.g. "toy story"')
    store = _store(args)
    key = _key(store, args)
    dataset = store.dataset(key.dataset)
    match, candidates, ambiguous = _search(store, key.dataset).resolve(args.title)
    if match is None:
        hint = f"; did you mean {_suggest(candidates)}?" if candidates else ""
        raise UsageError(f"no title in {key.dataset} matches {_echo(args.title)}{hint}")
    model = _model(store, key, err)
    items, scores = model.similar_items(match.item_idx, k)
    ids = dataset.item_map.ids
    results = [
        {"title": title, "item_id": _json_id(ids[item]), "score": float(score)}
        for item, title, score in zip(items.tolist(), dataset.titles(items), scores.tolist())
    ]
    if args.json:
        _print_json(
            {
                "match": {"title": match.title, "score": match.score},
                "candidates": [{"title": c.title, "score": c.score} for c in candidates],
                "items": results,
            },
            out,
        )
        return 0
    out.write(f"movies similar to {match.title} (match score {match.score:.0f})")
    others = [c.title for c in candidates if c.item_idx != match.item_idx]
    if ambiguous and others:
        out.write(f"\n  also matched: {'; '.join(others[:3])}")
    out.write(f"\n{key.describe()}\n\n")
    rows = [(rank, _clip(r["title"]), r["item_id"], f"{r['score']:.3f}") for rank, r in enumerate(results, 1)]
    out.write(format_table(["#", "title", "item id", "similarity"], rows, right=[True, False, True, True]) + "\n")
    return 0


def _read_ratings_file(path: Path) -> dict[str, Any]:
    """The JSON object of a ratings file (UTF-8, a byte-order mark allowed, at most
    `MAX_RATINGS_FILE_BYTES`); UsageError saying what is wrong otherwise."""
    example = '{"Toy Story (1995)": 4.5, "forest gump": 5, "50": 3}'
    shown = _echo_path(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_RATINGS_FILE_BYTES + 1)
        if len(raw) > MAX_RATINGS_FILE_BYTES:
            raise UsageError(
                f"the ratings file {shown} is over {MAX_RATINGS_FILE_BYTES:,} bytes; a ratings file lists one "
                f"person's ratings, e.g. {example}"
            )
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise UsageError(f"cannot read the ratings file {shown}: it is not UTF-8 text ({error.reason} at byte {error.start})") from None
    except OSError as error:
        raise UsageError(f"cannot read the ratings file {shown}: {error.strerror or error}") from None
    except ValueError:  # e.g. a NUL byte in the path
        raise UsageError(f"--ratings: {_echo(str(path))} is not a usable file name") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        where = f"{error.msg} at line {error.lineno}, column {error.colno}"
        raise UsageError(f"{shown} is not valid JSON ({where}); expected e.g. {example}") from None
    except RecursionError:
        raise UsageError(f"{shown} is not valid JSON for a ratings file (nested too deeply); expected e.g. {example}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{shown} must hold a JSON object of ratings like {example}, got a {type(data).__name__}")
    if not data:
        raise UsageError(f"{shown} holds no ratings; expected e.g. {example}")
    return data


def _item_of(entry: str, dataset: Dataset, search: TitleSearch, source: Path) -> int:
    """The item index a ratings-file key names: a raw item id (digits) or a title."""
    text = entry.strip()
    source = _echo_path(source)
    if not text:
        raise UsageError(f"{source} has an empty title; write a title or an item id")
    if text.isascii() and text.isdigit():  # "²" passes isdigit() but is no id: it is searched as a title
        raw: Any = int(text) if dataset.item_map.ids.dtype.kind in "iu" else text
        if raw not in dataset.item_map:
            raise UsageError(
                f"item id {_clip(text, 40)} in {source} is not a movie of {dataset.name} (keys made of digits are the "
                "dataset's raw ids, e.g. MovieLens movieId; for a title like 1984 write its year too: \"1984 (1984)\")"
            )
        return dataset.item_map.index_of(raw)
    match, candidates, ambiguous = search.resolve(text)
    if match is None:
        hint = f"the closest are {_suggest(candidates)}" if candidates else "check the spelling or use the item id"
        raise UsageError(f"unknown title {_echo(text)} in {source}; {hint}")
    if ambiguous:
        raise UsageError(
            f"title {_echo(text)} in {source} is ambiguous: it could be {_suggest(candidates)}; "
            "write the full title or the item id"
        )
    return match.item_idx


def _resolve_ratings(data: dict[str, Any], dataset: Dataset, search: TitleSearch, source: Path) -> dict[int, float]:
    """{item_idx: rating} from {"title or raw id": rating}, with a UsageError for anything unclear."""
    low, high = dataset.rating_scale
    ratings: dict[int, float] = {}
    named: dict[int, str] = {}
    for entry, value in data.items():
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not is_number or not math.isfinite(value) or not low <= value <= high:
            raise UsageError(
                f"rating for {_echo(entry)} in {_echo_path(source)} must be a number from {low:g} to {high:g} "
                f"({dataset.name}'s scale), got {_echo(value, 40)}"
            )
        item = _item_of(entry, dataset, search, source)
        if item in named:
            same = dataset.titles([item])[0]
            raise UsageError(f"{_echo(named[item])} and {_echo(entry)} in {_echo_path(source)} are the same movie ({same}); keep one")
        named[item] = entry
        ratings[item] = float(value)
    return ratings


def _cmd_recommend(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    k = _check_k(args.k)
    data = _read_ratings_file(args.ratings)
    store = _store(args)
    key = _key(store, args)
    dataset = store.dataset(key.dataset)
    ratings = _resolve_ratings(data, dataset, _search(store, key.dataset), args.ratings)
    model = _model(store, key, err)
    items, scores = model.recommend_for(ratings, k)
    ids = dataset.item_map.ids
    results = [
        {"title": title, "item_id": _json_id(ids[item]), "score": float(score)}
        for item, title, score in zip(items.tolist(), dataset.titles(items), scores.tolist())
    ]
    if args.json:
        _print_json({"items": results}, out)
        return 0
    label = "predicted rating" if model.explicit else "score"
    rated = "; ".join(f"{dataset.titles([i])[0]} = {r:g}" for i, r in ratings.items())
    out.write(f"recommendations from {len(ratings)} rating(s): {rated}\n{key.describe()}\n\n")
    rows = [(rank, _clip(r["title"]), r["item_id"], f"{r['score']:.2f}") for rank, r in enumerate(results, 1)]
    out.write(format_table(["#", "title", "item id", label], rows, right=[True, False, True, True]) + "\n")
    return 0


# --- uploads and saved profiles (`import`, `profiles ...`) ------------------------------------------
_DELIMITER_CHOICES = {"comma": ",", "tab": "\t", "semicolon": ";", "pipe": "|", "colons": "::"}
_IMPORT_DESCRIPTION = (
    "Import your own ratings file (CSV or TSV: user, item, rating and optionally a timestamp, one rating per row) as a "
    "named dataset under the user data folder ($RECENGINE_UPLOADS_DIR, else $XDG_DATA_HOME/recengine/uploads). The "
    "separator, header and columns are guessed (userId/user_id/user, movieId/item/item_id, rating/score/stars, "
    "timestamp/time/date) and can be given. The file is accepted whole or refused whole: problems are listed with "
    "their row (the header is row 1) and column. Duplicate (user, item) rows keep the latest by timestamp, else the last row."
)
_PROFILES_DESCRIPTION = (
    "Saved profiles (a person's ratings of one dataset's movies) in the profiles database ($RECENGINE_PROFILES_DB, "
    "else $XDG_DATA_HOME/recengine/profiles.sqlite3): list them, show one, export it as JSON or CSV, import one "
    "back, make a shareable link, or delete one. A profile is named per dataset; --dataset may be left out when "
    "the name is used on one dataset only."
)


def _add_profile_commands(commands: Any, formatter: type[argparse.HelpFormatter]) -> None:
    """The `import` and `profiles` commands (added by `build_parser`)."""
    upload = commands.add_parser("import", help="import your own ratings file as a dataset", formatter_class=formatter,
                                 description=textwrap.fill(_IMPORT_DESCRIPTION, width=88))  # fmt: skip
    add = upload.add_argument
    add("ratings", type=Path, metavar="RATINGS", help="the ratings file (.csv, .tsv, .txt; at most 50 MB / 5,000,000 rows)")
    add("--name", required=True, help="the dataset's name: 1-64 of a-z, 0-9, '-' and '_' (e.g. my-ratings)")
    add("--items", type=Path, metavar="ITEMS", help="optional items file: item id, title, optional genres (A|B) and year")
    add("--scale", metavar="LOW,HIGH", help="rating scale, e.g. 0.5,5 or 1,10 (default: inferred as 1,5 or 0.5,5)")
    add("--columns", metavar="ROLE=COLUMN,...", help="column mapping by header name or 1-based position, e.g. user=reviewer,item=2,rating=stars")
    add("--encoding", default="auto", help="text encoding: auto (UTF-8, with or without BOM) or e.g. latin-1 (default: auto)")
    add("--delimiter", choices=sorted(_DELIMITER_CHOICES), help="column separator (default: guessed)")
    add("--force", action="store_true", help="replace an upload of the same name")
    add("--json", action="store_true", help="print the import report as JSON")

    profiles = commands.add_parser("profiles", help="list, show, export, import or delete saved profiles", formatter_class=formatter,
                                   description=textwrap.fill(_PROFILES_DESCRIPTION, width=88))  # fmt: skip
    actions = profiles.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, summary: str, named: bool = True) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=summary, description=summary)
        if named:
            sub.add_argument("name", metavar="NAME", help="the profile's name")
        sub.add_argument("--dataset", "-d", metavar="NAME", help="the dataset the profile belongs to")
        sub.add_argument("--db", type=Path, metavar="FILE", help="profiles database (default: $RECENGINE_PROFILES_DB or the user data folder)")
        return sub

    listing = action("list", "list saved profiles (of one dataset with --dataset)", named=False)
    listing.add_argument("--json", action="store_true", help="print the list as JSON")
    show = action("show", "show a profile's ratings in the order rated")
    show.add_argument("--json", action="store_true", help="print the profile as JSON (the export format)")
    export = action("export", "export a profile to a JSON or CSV file (written atomically)")
    export.add_argument("--out", "-o", type=Path, required=True, metavar="FILE", help="output file, .json or .csv")
    export.add_argument("--format", choices=["json", "csv"], help="file format (default: from the file name)")
    imported = action("import", "import a profile from a JSON or CSV file (validated; nothing is saved when it fails)", named=False)
    imported.add_argument("file", type=Path, metavar="FILE", help="a .json or .csv profile file")
    imported.add_argument("--name", help="the profile's name (required for CSV; replaces the name in a JSON file)")
    imported.add_argument("--replace", action="store_true", help="replace the ratings of an existing profile of that name")
    action("link", "print a shareable link's query string (at most 200 ratings)")
    action("delete", "delete a profile and its ratings")


def _profile_store(args: argparse.Namespace) -> Any:
    from recengine.profiles import ProfileStore, ProfileStoreError

    try:
        return ProfileStore(args.db)
    except (ProfileStoreError, OSError) as error:
        raise UsageError(str(error)) from None


def _find_profile(store: Any, name: str, dataset: str | None) -> Any:
    """The profile called `name` on `dataset`, or on the only dataset that has that name."""
    from recengine.profiles import ProfileNotFoundError, validate_profile_name

    if dataset is not None:
        return store.find(name, dataset)
    wanted = validate_profile_name(name).lower()
    matches = [p for p in store.list_profiles() if p.name.lower() == wanted]
    if not matches:
        raise ProfileNotFoundError(f"no profile called {_echo(name)}; see `{PROG} profiles list`")
    if len(matches) > 1:
        raise UsageError(f"profile {_echo(name)} exists on {', '.join(sorted(p.dataset for p in matches))}; pass --dataset")
    return matches[0]


def _dataset_for_profiles(name: str, err: TextIO) -> Dataset | None:
    """The dataset to check items against and take titles from: an upload or a release on disk
    (None, with a note on stderr, for a known release that is not on this machine)."""
    from recengine.data import upload

    if upload.is_upload(name):
        return upload.load_upload(name)
    known = movielens.dataset_names()  # the releases, "synthetic" and the uploads
    if name not in known:
        raise UsageError(f"unknown dataset {_echo(name)}; known datasets: {', '.join(known)}")
    try:
        return movielens.load_dataset(name)
    except movielens.DatasetNotFoundError:
        err.write(f"note: {name} is not on this machine, so item ids are not checked and titles are not shown\n")
        return None


def _cmd_import(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from recengine.data import upload

    options: dict[str, Any] = {"encoding": args.encoding}
    if args.scale is not None:
        options["scale"] = upload.parse_scale(args.scale)
    if args.columns is not None:
        options["columns"] = upload.parse_column_mapping(args.columns)
    if args.delimiter is not None:
        options["delimiter"] = _DELIMITER_CHOICES[args.delimiter]
    if args.items is not None:
        options["items"] = args.items
    info, report = upload.import_upload(args.ratings, args.name, overwrite=args.force, **options)
    if args.json:
        _print_json({"name": info.name, "path": str(info.path), **{k: v for k, v in report.__dict__.items()}}, out)
        return 0
    out.write(f"imported {info.name!r}: {report.summary()}\nsaved at {info.path}\n"
              f"use it with e.g. `{PROG} train --dataset {info.name}`\n")  # fmt: skip
    return 0


def _cmd_profiles(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from recengine import profiles

    store = _profile_store(args)
    try:
        if args.action == "list":
            rows = store.list_profiles(args.dataset)
            if args.json:
                _print_json([dataclasses.asdict(p) for p in rows], out)
            elif not rows:
                out.write("no saved profiles" + (f" on {args.dataset}" if args.dataset else "") + "\n")
            else:
                table = [(p.name, p.dataset, p.n_ratings, p.n_skipped, time.strftime("%Y-%m-%d %H:%M", time.localtime(p.updated_at)))
                         for p in rows]  # fmt: skip
                out.write(format_table(["profile", "dataset", "ratings", "skipped", "changed"], table, right=[False, False, True, True, False]) + "\n")
            return 0
        if args.action == "import":
            dataset_name = args.dataset
            if dataset_name is None and args.file.suffix.lower() == ".json":
                dataset_name = profiles.read_profile_file(args.file, name=args.name).dataset
            if dataset_name is None:
                raise UsageError("a CSV profile needs --dataset (and --name)")
            dataset = _dataset_for_profiles(dataset_name, err)
            data = profiles.read_profile_file(args.file, dataset=dataset, name=args.name, dataset_name=dataset_name)
            info = store.import_profile(data, replace=args.replace)
            dropped = f"; {data.duplicates_dropped} repeated item(s) dropped (the last one kept)" if data.duplicates_dropped else ""
            out.write(f"imported profile {info.name!r} on {info.dataset}: {info.n_ratings} rating(s), {info.n_skipped} skipped{dropped}\n")
            return 0
        found = _find_profile(store, args.name, args.dataset)
        if args.action == "delete":
            store.delete(found)
            out.write(f"deleted profile {found.name!r} on {found.dataset} ({found.n_ratings} rating(s))\n")
            return 0
        data = store.load(found)
        if args.action == "link":
            out.write(profiles.profile_link(data) + "\n")
            return 0
        dataset = _dataset_for_profiles(found.dataset, err)
        if args.action == "export":
            path = profiles.write_profile_file(data, args.out, args.format, dataset=dataset)
            out.write(f"exported profile {found.name!r} ({len(data.ratings)} rating(s)) to {path}\n")
            return 0
        if args.json:
            out.write(profiles.profile_to_json(data))
            return 0
        titles: dict[Any, str] = {}
        if dataset is not None:
            indices, _ = data.item_ratings(dataset)
            titles = {profiles.item_id_of(dataset, i): t for i, t in zip(indices, dataset.titles(list(indices)))}
        out.write(f"profile {found.name!r} on {found.dataset}: {len(data.ratings)} rating(s), {len(data.skipped)} skipped\n\n")
        rows = [(n, r.item_id, f"{r.rating:g}", _clip(titles.get(r.item_id, "?"))) for n, r in enumerate(data.ratings, 1)]
        out.write(format_table(["#", "item id", "rating", "title"], rows, right=[True, True, True, False]) + "\n")
        return 0
    except profiles.ProfileStoreError as error:
        raise UsageError(str(error)) from None
    except FileNotFoundError as error:
        raise UsageError(str(error)) from None


_COMMANDS = {
    "datasets": _cmd_datasets,
    "download": _cmd_download,
    "train": _cmd_train,
    "evaluate": _cmd_evaluate,
    "similar": _cmd_similar,
    "recommend": _cmd_recommend,
    "import": _cmd_import,
    "profiles": _cmd_profiles,
}


def _safe(error: BaseException) -> str:
    """An error's message for the terminal: control characters (ESC, CR, NUL, ...) a message may
    carry from input are dropped; line breaks stay."""
    return _CONTROL.sub("", str(error))


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (0 ok, 1 failed, 2 bad arguments or input, 130 interrupted)."""
    out, err = sys.stdout, sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exit_:  # argparse already printed usage and the message (or the help)
        return int(exit_.code) if isinstance(exit_.code, int) else 2
    try:
        return _COMMANDS[args.command](args, out, err)
    except (UsageError, movielens.DatasetNotFoundError, ValueError) as error:
        err.write(f"error: {_safe(error)}\n")
        return 2
    except (TrainingError, movielens.DownloadError, OSError) as error:
        err.write(f"error: {_safe(error)}\n")
        return 1
    except KeyboardInterrupt:
        err.write("interrupted\n")
        return 130
