"""The command line, run in-process through `main(argv)`: commands, JSON shapes, tables and every error path."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import require_release
from recengine.cli import describe_hyper_parameters, format_table, main
from recengine.data import movielens
from recengine.models.base import config_field_docs

REPO = Path(__file__).resolve().parents[1]
TINY_MF = ["--set", "epochs=2", "--set", "embedding_dim=4", "--set", "batch_size=4096"]
EVALUATE_KEYS = {"rmse", "mae", "precision@10", "recall@10", "ndcg@10", "map@10", "hit@10", "mrr", "fit_seconds"}


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    """One models folder for the whole module, so the synthetic model is trained once."""
    return tmp_path_factory.mktemp("cli-models")


@pytest.fixture(scope="module")
def synthetic():
    return movielens.load_dataset("synthetic")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def synthetic_args(models_dir: Path, *extra: str) -> list[str]:
    return ["--dataset", "synthetic", *TINY_MF, "--models-dir", str(models_dir), *extra]


def assert_usage_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"


# --- help ------------------------------------------------------------------------------------------
def test_module_help_in_a_subprocess():
    result = subprocess.run([sys.executable, "-m", "recengine", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for command in ("datasets", "download", "train", "evaluate", "similar", "recommend"):
        assert command in result.stdout


@pytest.mark.parametrize("command", ["datasets", "download", "train", "evaluate", "similar", "recommend"])
def test_every_command_has_help(capsys, command):
    code, out, _ = run(capsys, command, "--help")
    assert code == 0 and out.startswith("usage: python -m recengine " + command)


@pytest.mark.parametrize("command", ["train", "evaluate", "similar", "recommend"])
def test_model_commands_explain_every_option_and_list_hyper_parameters(capsys, command):
    _, out, _ = run(capsys, command, "--help")
    for option in ("--dataset", "--model", "--split", "--seed", "--set", "--device", "--json"):
        assert option in out
    from recengine.models.mf import MFConfig

    assert "hyper-parameters per model" in out and "  mf (MFConfig):" in out
    assert f"embedding_dim={MFConfig().embedding_dim} " in out
    docs = config_field_docs(MFConfig)
    assert "embedding_dim" in docs and "epochs" in docs
    for doc in docs.values():
        assert doc in out


@dataclass(frozen=True)
class _DocumentedConfig:
    """Not a field: a docstring line."""

    #: Size of the vectors.
    #: Second line.
    dim: int = 8
    rate: float = 0.1  #: Step size.
    plain: str = "x"

    def __post_init__(self) -> None:
        value: int = 3  #: not a field (inside a method)


@dataclass(frozen=True)
class _DocumentedChild(_DocumentedConfig):
    rate: float = 0.2  # a plain comment: the base's doc stays
    #: A field of the child.
    extra: bool = False  #: Trailing part.


def test_field_docs_read_comments_above_and_after_fields():
    assert config_field_docs(_DocumentedConfig) == {"dim": "Size of the vectors. Second line.", "rate": "Step size."}
    assert config_field_docs(_DocumentedChild) == {
        "dim": "Size of the vectors. Second line.", "rate": "Step size.", "extra": "A field of the child. Trailing part.",
    }  # fmt: skip
    config_field_docs(_DocumentedChild)["dim"] = "changed"  # the cached docs are not the caller's dict
    assert config_field_docs(_DocumentedChild)["dim"] == "Size of the vectors. Second line."


def test_the_cli_and_the_app_form_read_the_same_docs():
    from ui.config_form import field_docs

    from recengine.models.base import get_model_class, model_names

    for name in model_names():
        config = get_model_class(name).Config
        assert field_docs(config) == config_field_docs(config)


def test_the_hyper_parameter_list_is_built_only_for_help(capsys, monkeypatch):
    import recengine.cli

    calls = []
    monkeypatch.setattr(recengine.cli, "describe_hyper_parameters", lambda: calls.append(1) or "HYPER-LIST")
    code, _, err = run(capsys, "train", "--dataset", "no-such-dataset")
    assert code == 2 and "no-such-dataset" in err and calls == []
    code, out, _ = run(capsys, "train", "--help")
    assert code == 0 and out.rstrip().endswith("HYPER-LIST") and calls == [1]


def test_hyper_parameter_list_covers_every_field_of_every_model():
    import dataclasses

    from recengine.models.base import get_model_class, model_names

    text = describe_hyper_parameters()
    for name in model_names():
        config = get_model_class(name).Config
        assert f"  {name} ({config.__name__}):" in text
        for spec in dataclasses.fields(config):
            assert f"    {spec.name}=" in text


def test_format_table_aligns_columns():
    table = format_table(["#", "title", "score"], [(1, "Alien", "0.50"), (10, "The Matrix", "12.25")], right=[True, False, True])
    assert table.splitlines() == [
        " #  title       score",
        "--  ----------  -----",
        " 1  Alien        0.50",
        "10  The Matrix  12.25",
    ]


# --- datasets and download ---------------------------------------------------------------------------
def test_datasets_lists_where_each_one_is(capsys, monkeypatch, tmp_path):
    (tmp_path / "ml-100k").mkdir()
    for name in ("u.data", "u.item"):
        (tmp_path / "ml-100k" / name).write_text("")
    monkeypatch.setenv("RECENGINE_DATA_DIR", str(tmp_path))
    code, out, _ = run(capsys, "datasets")
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert str(tmp_path / "ml-100k") in lines["ml-100k"]
    assert "not found — download with `python -m recengine download ml-1m`" in lines["ml-1m"]
    assert "generated on demand" in lines["synthetic"]


def test_download_shows_progress_on_stderr(capsys, monkeypatch, tmp_path):
    calls = []

    def fake_download(name, progress=None, force=False):
        calls.append((name, force))
        for done in (0, 2_500_000, 5_000_000):
            progress(done, 5_000_000)
        return tmp_path / name

    monkeypatch.setattr(movielens, "find_dataset", lambda name: None)
    monkeypatch.setattr(movielens, "download_dataset", fake_download)
    code, out, err = run(capsys, "download", "ml-100k")
    assert code == 0 and calls == [("ml-100k", False)]
    assert f"ml-100k is ready at {tmp_path / 'ml-100k'}" in out
    assert "100%" in err and "5.0/5.0 MB" in err


def test_download_of_a_present_release_does_nothing(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(movielens, "find_dataset", lambda name: tmp_path)
    monkeypatch.setattr(movielens, "download_dataset", lambda *a, **k: pytest.fail("must not download"))
    code, out, _ = run(capsys, "download", "ml-100k")
    assert code == 0 and "already available" in out


def test_download_failure_is_exit_1_without_traceback(capsys, monkeypatch):
    def failing(name, progress=None, force=False):
        raise movielens.DownloadError("connection refused")

    monkeypatch.setattr(movielens, "find_dataset", lambda name: None)
    monkeypatch.setattr(movielens, "download_dataset", failing)
    code, _, err = run(capsys, "download", "ml-1m")
    assert code == 1 and "connection refused" in err and "Traceback" not in err


def test_download_unknown_release(capsys):
    code, _, err = run(capsys, "download", "ml-3k")
    assert_usage_error(code, err, "unknown MovieLens release 'ml-3k'", "ml-100k")


# --- train / evaluate on the synthetic dataset --------------------------------------------------------
def test_train_then_reuse_then_evaluate(capsys, tmp_path):
    models_dir = tmp_path / "models"
    code, out, err = run(capsys, "train", *synthetic_args(models_dir))
    assert code == 0, err
    assert "trained in" in out and "rmse" in out and str(models_dir) in out
    assert "epoch 1/2" in err and "epoch 2/2" in err and "loss" in err  # progress on stderr

    code, out, err = run(capsys, "train", *synthetic_args(models_dir))
    assert code == 0 and "reused the saved model" in out and "epoch" not in err

    code, out, err = run(capsys, "evaluate", *synthetic_args(models_dir, "--json"))
    assert code == 0 and err == ""
    metrics = json.loads(out)
    assert set(metrics) == EVALUATE_KEYS
    assert 0.3 < metrics["rmse"] < 2.0 and 0 <= metrics["ndcg@10"] <= 1 and metrics["fit_seconds"] > 0
    saved = json.loads(next(models_dir.glob("synthetic__random-s42__mf__*/meta.json")).read_text())
    assert {k: metrics[k] for k in metrics if k != "fit_seconds"} == pytest.approx(saved["metrics"])


def test_set_seed_seeds_the_model_not_the_split(capsys, tmp_path):
    code, out, err = run(capsys, "train", *synthetic_args(tmp_path, "--set", "seed=7", "--json"))
    assert code == 0, err
    [folder] = [path for path in tmp_path.iterdir() if not path.name.startswith(".")]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["seed"] == 42 and meta["config"]["seed"] == 7


def test_evaluate_table(capsys, models_dir):
    code, out, _ = run(capsys, "evaluate", *synthetic_args(models_dir))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "mf on synthetic (random split, seed 42)"
    assert lines[2].split() == ["metric", "value"]
    assert {line.split()[0] for line in lines[4:]} == EVALUATE_KEYS


def test_train_json_and_force(capsys, models_dir):
    code, out, err = run(capsys, "train", *synthetic_args(models_dir, "--json", "--force"))
    assert code == 0 and "epoch 2/2" in err and set(json.loads(out)) == EVALUATE_KEYS


# --- an uploaded dataset, found by name like a release --------------------------------------------------
def _ratings_csv(path: Path, seed: int) -> Path:
    """20 users x 12 items, 120 ratings (1-5): enough for a random split and a tiny MF."""
    import numpy as np

    rng = np.random.default_rng(seed)
    pairs = rng.choice(20 * 12, size=120, replace=False)
    rows = [f"{u + 1},{i + 1},{r}" for u, i, r in zip(pairs // 12, pairs % 12, rng.integers(1, 6, size=120))]
    path.write_text("userId,movieId,rating\n" + "\n".join(rows) + "\n")
    return path


def test_an_upload_trains_evaluates_and_is_retrained_when_replaced(capsys, tmp_path):
    models_dir = tmp_path / "models"
    upload_args = ["--dataset", "my-upload", "--set", "epochs=1", "--set", "embedding_dim=4", "--models-dir", str(models_dir)]
    code, _, err = run(capsys, "import", str(_ratings_csv(tmp_path / "a.csv", seed=1)), "--name", "my-upload")
    assert code == 0, err
    code, out, _ = run(capsys, "datasets")
    assert code == 0 and any(line.split()[0] == "my-upload" for line in out.splitlines()[2:])

    code, out, err = run(capsys, "train", *upload_args)
    assert code == 0, err
    assert "mf on my-upload (random split, seed 42): trained in" in out
    [first] = [path for path in models_dir.iterdir() if not path.name.startswith(".")]
    code, out, err = run(capsys, "evaluate", *upload_args, "--json")
    assert code == 0 and err == "", err  # the saved model, no training
    assert json.loads(out)["rmse"] == pytest.approx(json.loads((first / "meta.json").read_text())["metrics"]["rmse"])

    code, _, err = run(capsys, "import", str(_ratings_csv(tmp_path / "b.csv", seed=2)), "--name", "my-upload", "--force")
    assert code == 0, err
    code, out, err = run(capsys, "train", *upload_args)
    assert code == 0, err
    assert "trained in" in out and "epoch 1/1" in err  # not the model of the old ratings
    folders = sorted(path.name for path in models_dir.iterdir() if not path.name.startswith("."))
    assert len(folders) == 2 and first.name in folders  # the old folder is left alone, never reused
    code, out, _ = run(capsys, "train", *upload_args)
    assert code == 0 and "reused the saved model" in out


# --- similar ---------------------------------------------------------------------------------------
def test_similar_json(capsys, models_dir, synthetic):
    code, out, err = run(capsys, "similar", "synthetic movie 17", "-k", "4", "--json", *synthetic_args(models_dir))
    assert code == 0, err
    result = json.loads(out)
    assert set(result) == {"match", "candidates", "items"}
    title = synthetic.titles([16])[0]
    assert result["match"] == {"title": title, "score": 100.0}
    assert result["candidates"][0] == result["match"] and all(set(c) == {"title", "score"} for c in result["candidates"])
    assert len(result["items"]) == 4 and all(set(i) == {"title", "item_id", "score"} for i in result["items"])
    assert 17 not in [i["item_id"] for i in result["items"]]
    scores = [i["score"] for i in result["items"]]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    for item in result["items"]:
        assert synthetic.titles([synthetic.item_map.index_of(item["item_id"])])[0] == item["title"]


def test_similar_table(capsys, models_dir):
    code, out, _ = run(capsys, "similar", "synthetic movie 17", "-k", "3", *synthetic_args(models_dir))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("movies similar to Synthetic Movie 17 (")
    assert lines[3].split() == ["#", "title", "item", "id", "similarity"]
    assert [line.split()[0] for line in lines[5:]] == ["1", "2", "3"]


# --- recommend -------------------------------------------------------------------------------------
def write_ratings(tmp_path: Path, content) -> Path:
    path = tmp_path / "ratings.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_recommend_json_from_titles_and_ids(capsys, models_dir, synthetic, tmp_path):
    first, second = synthetic.titles([0, 1])
    ratings = write_ratings(tmp_path, {first: 5, "synthetic movie 2": 4.5, "3": 1})
    code, out, err = run(capsys, "recommend", "--ratings", str(ratings), "-k", "5", "--json", *synthetic_args(models_dir))
    assert code == 0, err
    result = json.loads(out)
    assert set(result) == {"items"} and len(result["items"]) == 5
    ids = [item["item_id"] for item in result["items"]]
    assert not {1, 2, 3} & set(ids)  # rated movies are not recommended
    assert all(isinstance(i, int) for i in ids)
    scores = [item["score"] for item in result["items"]]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 5.5 for s in scores)  # predicted ratings


def test_recommend_table(capsys, models_dir, synthetic, tmp_path):
    ratings = write_ratings(tmp_path, {"7": 4})
    code, out, _ = run(capsys, "recommend", "--ratings", str(ratings), "-k", "2", *synthetic_args(models_dir))
    assert code == 0
    assert out.splitlines()[0] == f"recommendations from 1 rating(s): {synthetic.titles([6])[0]} = 4"
    assert "predicted rating" in out


@pytest.mark.parametrize(
    "content, fragments",
    [
        ("{not json", ["is not valid JSON", "line 1"]),
        ("[1, 2]", ["must hold a JSON object", "list"]),
        ("{}", ["holds no ratings"]),
        ({"synthetic movie 1": 7}, ["must be a number from 0.5 to 5", "got 7"]),
        ({"synthetic movie 1": -1}, ["must be a number from 0.5 to 5"]),
        ('{"synthetic movie 1": NaN}', ["must be a number", "nan"]),
        ({"synthetic movie 1": "five"}, ["must be a number", "'five'"]),
        ({"synthetic movie 1": True}, ["must be a number"]),
        ({"zzzz qqqq wwww": 4}, ["unknown title 'zzzz qqqq wwww'"]),
        ({"synthetic film 1": 4}, ["unknown title", "the closest are 'Synthetic Movie"]),
        ({"99999": 4}, ["item id 99999", "not a movie of synthetic"]),
        ({"synthetic movie": 4}, ["is ambiguous", "write the full title or the item id"]),
        ({"1": 4, "synthetic movie 1": 3}, ["are the same movie"]),
        ({" ": 4}, ["empty title"]),
    ],
)
def test_recommend_rejects_bad_ratings_files(capsys, models_dir, tmp_path, content, fragments):
    ratings = write_ratings(tmp_path, content)
    code, out, err = run(capsys, "recommend", "--ratings", str(ratings), *synthetic_args(models_dir))
    assert_usage_error(code, err, str(ratings), *fragments)
    assert out == ""


def test_recommend_missing_file(capsys, models_dir, tmp_path):
    code, _, err = run(capsys, "recommend", "--ratings", str(tmp_path / "absent.json"), *synthetic_args(models_dir))
    assert_usage_error(code, err, "cannot read the ratings file", "absent.json")


# --- errors with exit code 2 ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, fragments",
    [
        (["evaluate", "--dataset", "nope"], ["dataset must be one of", "ml-100k", "'nope'"]),
        (["evaluate", "--dataset", "synthetic", "--model", "nope"], ["model must be one of", "mf", "'nope'"]),
        (["evaluate", "--dataset", "synthetic", "--split", "nope"], ["split must be one of", "random"]),
        (["evaluate", "--dataset", "synthetic", "--split", "u1"], ["'u1'", "only for ml-100k"]),
        (["train", "--dataset", "synthetic", "--set", "epochs=abc"], ["hyper-parameter epochs must be int", "'abc'"]),
        (["train", "--dataset", "synthetic", "--set", "epoch=3"], ["unknown hyper-parameter", "epochs"]),
        (["train", "--dataset", "synthetic", "--set", "epochs"], ["--set expects NAME=VALUE"]),
        (["train", "--dataset", "synthetic", "--set", "epochs=0"], ["epochs must be >= 1"]),
        (["similar", "", "--dataset", "synthetic"], ["title is empty"]),
        (["similar", "   ", "--dataset", "synthetic"], ["title is empty"]),
        (["similar", "zzzz qqqq wwww", "--dataset", "synthetic"], ["no title in synthetic matches 'zzzz qqqq wwww'"]),
        (["similar", "synthetic film 1", "--dataset", "synthetic"], ["did you mean 'Synthetic Movie"]),
        (["similar", "synthetic movie 1", "-k", "0", "--dataset", "synthetic"], ["-k must be at least 1"]),
    ],
)
def test_bad_arguments_exit_2_with_a_message(capsys, argv, fragments):
    code, out, err = run(capsys, *argv)
    assert_usage_error(code, err, *fragments)
    assert out == ""


def test_missing_data_reports_where_it_looked(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("RECENGINE_DATA_DIR", str(tmp_path))
    code, _, err = run(capsys, "evaluate", "--dataset", "ml-1m")
    assert_usage_error(code, err, "ml-1m not found", "python -m recengine download ml-1m", str(tmp_path))


def test_argparse_errors_return_2(capsys):
    code, _, err = run(capsys, "recommend", "--dataset", "synthetic")  # --ratings is required
    assert code == 2 and "--ratings" in err
    code, _, err = run(capsys, "nonsense")
    assert code == 2 and "invalid choice" in err
    code, _, err = run(capsys, "train", "--seed", "x")
    assert code == 2 and "invalid int value" in err


def test_cuda_on_a_cpu_machine_is_a_clear_error(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = run(capsys, "evaluate", "--dataset", "synthetic", "--device", "cuda")
    assert_usage_error(code, err, "CUDA is not available")


# --- real MovieLens data ---------------------------------------------------------------------------
def test_similar_forest_gump_on_ml100k(capsys, models_dir):
    require_release("ml-100k")
    argv = ["similar", "forest gump", "--dataset", "ml-100k", "--json", "--set", "epochs=1", "--set", "embedding_dim=8", "--models-dir", str(models_dir)]
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    result = json.loads(out)
    assert result["match"]["title"] == "Forrest Gump (1994)"
    assert len(result["items"]) == 10 and all(i["item_id"] != 69 for i in result["items"])


def test_evaluate_u1_json_on_ml100k(capsys, models_dir):
    require_release("ml-100k")
    argv = ["evaluate", "--dataset", "ml-100k", "--split", "u1", "--json", "--set", "epochs=1", "--set", "embedding_dim=8", "--models-dir", str(models_dir)]
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    metrics = json.loads(out)
    assert set(metrics) == EVALUATE_KEYS
    assert 0.8 < metrics["rmse"] < 1.3 and all(math.isfinite(v) for v in metrics.values())


def test_u1_on_ml_latest_small_is_a_clear_error(capsys):
    require_release("ml-latest-small")
    code, _, err = run(capsys, "evaluate", "--dataset", "ml-latest-small", "--split", "u1")
    assert_usage_error(code, err, "'u1'", "only for ml-100k")
