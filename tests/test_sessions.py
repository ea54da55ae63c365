"""Many sessions on one real server: each keeps its own profile, all share the data and models.

The app runs under `streamlit run` on a free port (benchmarks/load.py's `serve`), on the
synthetic dataset with a tiny MF model, and is driven over Streamlit's websocket protocol by
`AppSession` clients, each one a browser tab with its own session. A few lines run in the server
before Streamlit starts (`PRELUDE`): they log every dataset load and slow every training down by
`TRAINING_DELAY`, so that a second session surely arrives while the first one's training runs.
The store logs one "training <model> on <dataset>" line per training. One server serves the
module: its first contact (two sessions at once, nothing trained yet) is recorded by the
fixture, then it is warmed up for the other tests.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from conftest import import_script

pytestmark = pytest.mark.timeout(240)

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "load.py"
QUICK = {"mf": {"epochs": 2, "embedding_dim": 8}, "als": {"factors": 8, "iterations": 2}}
TIMEOUT = 120.0
#: Seconds every training of the module's server is slowed by.
TRAINING_DELAY = 2.0
PRELUDE = """
import logging, time
import recengine.store
from recengine.data import movielens as _movielens

_log = logging.getLogger("recengine.test")
_load_dataset, _create_model = _movielens.load_dataset, recengine.store.create_model

def _logged_load_dataset(name, *args, **kwargs):
    _log.info("dataset load %s", name)
    return _load_dataset(name, *args, **kwargs)

def _slow_create_model(*args, **kwargs):
    time.sleep({delay})
    return _create_model(*args, **kwargs)

_movielens.load_dataset = _logged_load_dataset
recengine.store.create_model = _slow_create_model
"""


@pytest.fixture(scope="module")
def load():
    """benchmarks/load.py as a module."""
    with import_script(SCRIPT, "load_benchmark_sessions") as module:
        yield module


@dataclass
class App:
    """The module's server, and what happened when it was first asked for anything: two
    sessions opened at the same moment while no model was trained."""

    server: Any
    first_runs: list[Any]
    trainings_then: list[str]
    dataset_loads_then: list[str]
    models_then: list[str]


@pytest.fixture(scope="module")
def app(load, tmp_path_factory) -> Iterator[App]:
    """One server for the module (synthetic data, tiny models, every training slowed by
    TRAINING_DELAY): first two sessions open it at once, then a warm-up session rates movies
    and opens Recommendations, so what those pages use is trained before the other tests."""
    home = tmp_path_factory.mktemp("sessions-app")

    async def both_open(url: str) -> list[Any]:
        async with load.AppSession(url, timeout=TIMEOUT) as a, load.AppSession(url, timeout=TIMEOUT) as b:
            return list(await asyncio.gather(a.open(), b.open()))

    with load.serve(
        models_dir=home / "models",
        dataset="synthetic",
        hyper=QUICK,
        log_path=home / "server.log",
        prelude=PRELUDE.format(delay=TRAINING_DELAY),
    ) as server:
        first_runs = asyncio.run(both_open(server.url))
        app = App(server, first_runs, server.trainings(), dataset_loads(server), saved_models(home / "models"))
        asyncio.run(load.warm_up(server.url, TIMEOUT))
        yield app


def saved_models(models_dir: Path) -> list[str]:
    """Names of the model folders the store saved."""
    return sorted(path.name for path in models_dir.iterdir() if not path.name.startswith("."))


def dataset_loads(server) -> list[str]:
    """The names of the datasets the server loaded, once per load (logged by PRELUDE)."""
    return [line.rsplit(" ", 1)[1] for line in server.log().splitlines() if "recengine.test: dataset load " in line]


def batch(run) -> list:
    """The onboarding batch's rating controls, in page order."""
    return [element for element in run.widgets("button_group") if "-batch-" in element.button_group.id]


def chosen(run) -> dict[str, list[str]]:
    """{widget id suffix (item): the rating shown} for the batch controls that show one."""
    return {
        element.button_group.id.rsplit("-", 1)[1]: list(element.button_group.raw_values)
        for element in batch(run)
        if element.button_group.raw_values
    }


def test_two_sessions_asking_for_an_untrained_model_train_it_once(app):
    """Both first requests need the model; one training runs (slowed, so both surely ask while
    it runs), the other session waits for it, and both get the same onboarding batch."""
    run_a, run_b = app.first_runs
    for run in (run_a, run_b):
        assert run.problems == []
        # Each session showed the training's progress and then had the model: a batch to rate.
        assert any(label.startswith("Trained mf on synthetic in ") for label in run.labels), run.labels
        assert len(batch(run)) > 0
        assert run.profile_count() == 0
    assert [element.button_group.id for element in batch(run_a)] == [element.button_group.id for element in batch(run_b)]
    assert len(app.trainings_then) == 1, app.trainings_then
    assert "training mf on synthetic (random split, seed 42)" in app.trainings_then[0]
    assert app.dataset_loads_then == ["synthetic"]
    assert len(app.models_then) == 1 and app.models_then[0].startswith("synthetic__random-s42__mf__")


def test_two_sessions_never_see_each_others_ratings(load, app):
    async def scenario(url: str) -> None:
        async with load.AppSession(url, timeout=TIMEOUT) as a, load.AppSession(url, timeout=TIMEOUT) as b:
            run_a, run_b = await asyncio.gather(a.open(), b.open())
            items = [element.button_group.id.rsplit("-", 1)[1] for element in batch(run_a)]
            assert items == [element.button_group.id.rsplit("-", 1)[1] for element in batch(run_b)]

            # A rates three movies of the batch both sessions see.
            for group, stars in zip(batch(run_a)[:3], ("5", "4", "2"), strict=True):
                run_a = await a.choose(group, stars)
            assert run_a.problems == []
            assert run_a.profile_count() == 3
            assert chosen(run_a) == {items[0]: ["5"], items[1]: ["4"], items[2]: ["2"]}

            # B, on the same server at the same time, has rated nothing.
            run_b = await b.rerun()
            assert run_b.problems == []
            assert run_b.profile_count() == 0
            assert chosen(run_b) == {}
            assert "Nothing rated yet." in run_b.texts()
            recommendations_b = await b.go_to("Recommendations")
            assert recommendations_b.problems == []
            assert recommendations_b.profile_count() == 0
            assert any(text.startswith("Rate a few movies first") for text in recommendations_b.texts())
            assert recommendations_b.widgets("dataframe") == []

            # A's recommendations are built from A's ratings.
            recommendations_a = await a.go_to("Recommendations")
            assert recommendations_a.problems == []
            assert recommendations_a.profile_count() == 3
            assert len(recommendations_a.widgets("dataframe")) >= 1

            # Both act at once: B rates one movie (another rating of one A rated), A reruns.
            run_b = await b.go_to("Rate movies")
            run_b, run_a = await asyncio.gather(b.choose(batch(run_b)[0], "1"), a.go_to("Rate movies"))
            assert run_b.profile_count() == 1 and chosen(run_b) == {items[0]: ["1"]}
            assert run_a.profile_count() == 3
            assert chosen(run_a) == {items[0]: ["5"], items[1]: ["4"], items[2]: ["2"]}

            # A's reset empties A's profile only.
            run_a = await a.click(run_a.widget("button", label="Reset profile"))
            run_b = await b.rerun()
            assert (run_a.profile_count(), run_b.profile_count()) == (0, 1)
            assert chosen(run_b) == {items[0]: ["1"]}

    asyncio.run(scenario(app.server.url))


def test_sessions_share_one_dataset_and_one_trained_model(load, app):
    """Four more sessions onboard and ask for recommendations: nothing is loaded or trained again."""
    server = app.server
    trained_before = server.trainings()
    models_before = saved_models(Path(server.log_path).parent / "models")
    assert len(trained_before) >= 1 and len(set(trained_before)) == len(trained_before)

    async def person(url: str) -> tuple[int, int, list[str]]:
        async with load.AppSession(url, timeout=TIMEOUT) as session:
            run = await session.open()
            problems = list(run.problems)
            for group in batch(run)[:2]:
                run = await session.choose(group, "4")
                problems += run.problems
            recommendations = await session.go_to("Recommendations")
            problems += recommendations.problems
            return run.profile_count(), len(recommendations.widgets("dataframe")), problems

    async def crowd(url: str):
        return await asyncio.gather(*(person(url) for _ in range(4)))

    results = asyncio.run(crowd(server.url))
    assert results == [(2, results[0][1], [])] * 4 and results[0][1] >= 1
    assert server.trainings() == trained_before  # no session's first request trained anything
    assert dataset_loads(server) == ["synthetic"]  # loaded once for the whole process
    assert saved_models(Path(server.log_path).parent / "models") == models_before
    assert any(name.startswith("synthetic__random-s42__mf__") for name in models_before)
