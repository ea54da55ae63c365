"""The Streamlit app, page by page, with `streamlit.testing.v1.AppTest`.

Most tests run on the synthetic dataset with a tiny MF configuration (2 epochs, 8 factors, set
through $RECENGINE_APP_HYPER) so a model trains in about a second; the trained model is shared
by the tests of this module through one store. Tests on real ml-100k are skipped when
$RECENGINE_DATA_DIR does not hold it. Streamlit's caches are cleared around every test.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from conftest import require_release
from streamlit.testing.v1 import AppTest

import ui.cached
import ui.widgets
from recengine.data.movielens import DownloadError, load_dataset
from recengine.models.base import get_model_class, model_names
from recengine.models.mf import MFConfig
from recengine.onboarding import GOOD_PROFILE_SIZE
from recengine.store import ModelStore
from recengine.training import SCHEDULES
from ui import state, widgets
from ui.config_form import changed_values, field_choices, field_docs

APP = Path(__file__).resolve().parents[1] / "app.py"
QUICK = {"mf": {"epochs": 2, "embedding_dim": 8}}
PAGES = {
    "app_pages/rate_movies.py": "Rate movies",
    "app_pages/recommendations.py": "Recommendations",
    "app_pages/because_you_watched.py": "Because you watched…",
    "app_pages/latent_map.py": "Latent map",
    "app_pages/training_monitor.py": "Training monitor",
}
TIMEOUT = 120


# --- fixtures and helpers -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def shared_store(tmp_path_factory) -> ModelStore:
    """One store for the module, so the quick synthetic model is trained once."""
    return ModelStore(root=tmp_path_factory.mktemp("app-models"), device="cpu")


@pytest.fixture
def use_store(monkeypatch):
    """Make the app use a given store (its `st.cache_resource` wrapper calls `default_store`)."""

    def install(store: ModelStore) -> ModelStore:
        monkeypatch.setattr(ui.cached, "default_store", lambda: store)
        return store

    return install


@pytest.fixture
def app(monkeypatch, shared_store, use_store):
    """A factory of AppTests on the synthetic dataset with the quick model, caches cleared."""
    monkeypatch.setenv(state.DATASET_ENV, "synthetic")
    monkeypatch.setenv(state.HYPER_ENV, json.dumps(QUICK))
    use_store(shared_store)
    st.cache_resource.clear()
    st.cache_data.clear()

    def make() -> AppTest:
        return AppTest.from_file(str(APP), default_timeout=TIMEOUT)

    yield make
    st.cache_resource.clear()
    st.cache_data.clear()


def assert_clean(at: AppTest) -> None:
    """No exception element and no error message on the page."""
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def open_page(at: AppTest, page: str) -> AppTest:
    at.switch_page(page).run()
    assert_clean(at)
    assert at.title[0].value == PAGES[page]
    return at


def profile_of(at: AppTest, dataset: str = "synthetic") -> state.Profile:
    return at.session_state["profiles"][dataset]


def rate(at: AppTest, key: str, rating: float) -> AppTest:
    at.segmented_control(key=key).set_value(rating).run()
    assert_clean(at)
    return at


def batch_keys(at: AppTest, dataset: str = "synthetic") -> list[str]:
    return [control.key for control in at.segmented_control if control.key.startswith(f"batch-{dataset}-")]


def preview_lines(at: AppTest) -> list[str]:
    """The numbered recommendation lines of the live preview on the Rate movies page."""
    return [m.value for m in at.markdown if m.value[:1].isdigit() and ". **" in m.value[:6]]


def plotly_spec(at: AppTest, key: str) -> dict:
    charts = [element for element in at.get("plotly_chart") if key in element.proto.id]
    assert charts, f"no plotly chart with key {key}"
    return json.loads(charts[0].proto.spec)


def array(value) -> np.ndarray:
    """A plotly trace array from the chart's JSON: a list, or a base64 typed array {dtype, bdata}."""
    if isinstance(value, dict) and "bdata" in value:
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        return flat.reshape([int(n) for n in str(value["shape"]).split(",")]) if "shape" in value else flat
    return np.asarray(value)


@functools.cache
def synthetic_catalogue():
    return load_dataset("synthetic").catalogue


def synthetic_titles() -> list[str]:
    return synthetic_catalogue()["display_title"].tolist()


# --- small helpers of the ui package ------------------------------------------------------------
def test_half_star_labels_and_choices():
    assert [widgets.half_label(r) for r in (0.5, 1.0, 3.5, 5.0)] == ["½", "1", "3½", "5"]
    assert [widgets.stars(r) for r in (0.5, 3.0, 4.5)] == ["½", "★★★", "★★★★½"]
    assert widgets.rating_choices((1.0, 5.0)) == [1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0]
    assert widgets.rating_choices((0.5, 5.0))[0] == 0.5 and len(widgets.rating_choices((0.5, 5.0))) == 10


def test_titles_are_escaped_for_markdown():
    assert widgets.md("M*A*S*H (1970)") == r"M\*A\*S\*H (1970)"
    assert widgets.md("The Secret of My Succe$s") == r"The Secret of My Succe\$s"
    assert widgets.md("[REC] (2007)") == r"\[REC\] (2007)"
    assert widgets.md("Forrest Gump (1994)") == "Forrest Gump (1994)"


def test_profile_rate_skip_unrate_reset():
    profile = state.Profile()
    profile.skip(3)
    profile.rate(3, 4)
    assert profile.ratings == {3: 4.0} and profile.skipped == set()
    profile.skip(3)
    assert profile.ratings == {} and profile.skipped == {3}
    profile.rate(5, 2.5)
    profile.unrate(99)  # nothing to forget: no error
    profile.batch.extend([1, 2])
    profile.shown.add(1)
    assert len(profile) == 1
    profile.reset()
    assert (profile.ratings, profile.skipped, profile.batch, profile.shown) == ({}, set(), [], set())


def test_app_hyper_reads_the_environment(monkeypatch):
    monkeypatch.setenv(state.HYPER_ENV, '{"mf": {"epochs": 3, "embedding_dim": 4}}')
    assert state.app_hyper("mf") == (("embedding_dim", 4), ("epochs", 3))
    assert state.app_hyper("other") == ()
    monkeypatch.setenv(state.HYPER_ENV, "{not json")
    with pytest.raises(ValueError, match="must be JSON like"):
        state.app_hyper("mf")
    monkeypatch.setenv(state.HYPER_ENV, '{"mf": 3}')
    with pytest.raises(ValueError, match="map model names to objects"):
        state.app_hyper("mf")


MODES = ("fast", "exact")


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    #: One of MODES.
    mode: str = "fast"
    #: "up" (the usual) or "down".
    direction: str = "up"
    #: Free text such as "hello".
    note: str = "x"
    #: Steps per epoch.
    steps: int = 3


@dataclasses.dataclass(frozen=True)
class ToyChildConfig(ToyConfig):
    #: A field of the subclass.
    extra: bool = False


def test_config_form_reads_docs_and_choices_from_the_source():
    docs = field_docs(ToyChildConfig)
    assert docs == {
        "mode": "One of MODES.", "direction": '"up" (the usual) or "down".', "note": 'Free text such as "hello".',
        "steps": "Steps per epoch.", "extra": "A field of the subclass.",
    }
    assert field_choices(ToyChildConfig, docs["mode"], "fast") == MODES
    assert field_choices(ToyChildConfig, docs["direction"], "up") == ("up", "down")
    assert field_choices(ToyChildConfig, docs["note"], "x") is None  # one quoted word, not the default
    assert field_choices(ToyChildConfig, "One of recengine.training.SCHEDULES.", "cosine") == SCHEDULES
    assert field_choices(ToyChildConfig, "One of NO_SUCH_NAME.", "a") is None


def test_config_form_helpers_read_the_dataclass():
    docs = field_docs(MFConfig)
    assert docs["embedding_dim"].startswith("Length d of the user and item factor vectors")
    assert set(docs) <= {field for field in MFConfig.__dataclass_fields__}
    assert changed_values(MFConfig()) == {}
    assert changed_values(MFConfig(epochs=3, embedding_dim=8)) == {"embedding_dim": 8, "epochs": 3}


# --- every page renders -------------------------------------------------------------------------
def test_the_sidebar_shows_dataset_model_device_and_profile(app):
    at = app().run()
    assert_clean(at)
    dataset = at.sidebar.selectbox(key=state.DATASET_KEY)
    assert dataset.value == "synthetic"
    assert "synthetic" in dataset.options and any(option.startswith("ml-100k") for option in dataset.options)
    assert at.sidebar.selectbox(key=state.MODEL_KEY).value == "mf"
    assert "Device: **CPU**" in [c.value for c in at.sidebar.caption]
    assert "**Your profile** · 0 movies rated" in [m.value for m in at.sidebar.markdown]
    assert at.sidebar.button[0].disabled  # nothing to reset yet


@pytest.mark.parametrize("page", list(PAGES))
def test_every_page_renders_on_synthetic(app, page):
    at = app().run()
    assert_clean(at)
    open_page(at, page)
    assert at.sidebar.selectbox(key=state.DATASET_KEY).value == "synthetic"  # the frame is around every page


def test_first_start_trains_with_progress_then_loads_from_disk(app, use_store, tmp_path):
    fresh = use_store(ModelStore(root=tmp_path / "models", device="cpu"))
    at = app().run()
    assert_clean(at)
    assert len(at.status) == 1 and at.status[0].state == "complete"
    assert at.status[0].label.startswith("Trained mf on synthetic in")
    assert len(fresh.artefacts()) == 1
    # A new process (fresh store, same folder) loads the model instead of training it.
    use_store(ModelStore(root=tmp_path / "models", device="cpu"))
    st.cache_resource.clear()
    again = app().run()
    assert_clean(again)
    assert len(again.status) == 0
    assert len(batch_keys(again)) == 6


# --- rating movies --------------------------------------------------------------------------------
def test_rating_updates_the_profile_and_the_live_preview(app):
    at = app().run()
    assert "0 rated" in at.get("progress")[0].proto.text
    assert not preview_lines(at)
    keys = batch_keys(at)
    assert len(keys) == 6
    first, second = (int(key.rsplit("-", 1)[1]) for key in keys[:2])
    rate(at, keys[0], 5.0)
    assert profile_of(at).ratings == {first: 5.0}
    before = preview_lines(at)
    assert len(before) == 8
    rate(at, keys[1], 1.0)
    assert profile_of(at).ratings == {first: 5.0, second: 1.0}
    assert at.get("progress")[0].proto.text.startswith("2 rated; recommendations get good around 10")
    after = preview_lines(at)
    assert after != before
    titles = synthetic_titles()
    assert not any(titles[first] in line.split("·")[0] or titles[second] in line.split("·")[0] for line in after)
    # Unpicking the rating forgets it; the sidebar count follows.
    rate(at, keys[1], None)
    assert profile_of(at).ratings == {first: 5.0}
    assert "**Your profile** · 1 movie rated" in [m.value for m in at.sidebar.markdown]


def test_skip_next_batch_remove_and_reset(app):
    at = app().run()
    keys = batch_keys(at)
    items = [int(key.rsplit("-", 1)[1]) for key in keys]
    rate(at, keys[0], 4.0)
    at.button(key=f"skip-{items[1]}").click().run()
    assert profile_of(at).skipped == {items[1]}
    assert at.segmented_control(key=keys[0]).value == 4.0  # the batch stays until "Next batch"
    next(b for b in at.button if b.label == "Next batch").click().run()
    assert_clean(at)
    new_items = [int(key.rsplit("-", 1)[1]) for key in batch_keys(at)]
    assert len(new_items) == 6 and not set(new_items) & set(items)
    at.button(key=f"remove-synthetic-{items[0]}").click().run()
    assert profile_of(at).ratings == {}
    rate(at, batch_keys(at)[0], 3.0)
    at.switch_page("app_pages/latent_map.py").run()  # the sidebar is there on every page
    assert "**Your profile** · 1 movie rated" in [m.value for m in at.sidebar.markdown]
    reset = at.sidebar.button[0]
    assert reset.label == "Reset profile" and not reset.disabled
    reset.click().run()
    assert_clean(at)
    assert profile_of(at).ratings == {} and profile_of(at).skipped == set() and profile_of(at).shown == set()
    assert at.sidebar.button[0].disabled


def test_search_box_rates_any_movie(app):
    titles = synthetic_titles()
    target = int(np.argmin(synthetic_catalogue()["popularity"].to_numpy()))  # never in a batch
    at = app().run()
    at.text_input(key="rate-search-synthetic").input(titles[target]).run()
    assert_clean(at)
    rate(at, f"search-synthetic-{target}", 4.5)
    assert profile_of(at).ratings == {target: 4.5}
    # The same movie shows the same rating wherever it appears.
    at.text_input(key="rate-search-synthetic").input(titles[target].lower()).run()
    assert at.segmented_control(key=f"search-synthetic-{target}").value == 4.5


# --- recommendations --------------------------------------------------------------------------------
def test_recommendations_ask_for_ratings_first(app):
    at = open_page(app().run(), "app_pages/recommendations.py")
    assert "Rate a few movies first" in at.info[0].value
    assert at.get("page_link")[0].proto.label == "Rate movies"


def rated_app(app, n: int) -> AppTest:
    """The app after rating the first `n` onboarding movies (alternating 5 and 2 stars)."""
    at = app().run()
    rated = 0
    while rated < n:
        for key in batch_keys(at):
            if rated == n:
                break
            rate(at, key, 5.0 if rated % 2 == 0 else 2.0)
            rated += 1
        if rated < n:
            next(b for b in at.button if b.label == "Next batch").click().run()
    return at


def test_recommendations_list_reasons_and_the_thin_profile_flag(app):
    at = open_page(rated_app(app, 3), "app_pages/recommendations.py")
    assert "Your profile is still thin: 3 of about 10 ratings" in at.warning[0].value
    table = at.dataframe[0].value
    assert len(table) == 20
    rated_titles = set(synthetic_titles()[i] for i in profile_of(at).ratings)
    assert not rated_titles & set(table["Title"])
    assert table["Predicted"].between(1.0, 5.0).all()
    # The default order blends in a popularity prior; with novelty 0 it is the predicted rating alone.
    at.slider(key="rec-novelty").set_value(0.0).run()
    assert at.dataframe[0].value["Predicted"].is_monotonic_decreasing
    rated_names = {title.rsplit(" (", 1)[0] for title in rated_titles}
    reasons = [part.rsplit(" ", 1) for row in table["Because you rated"] for part in row.split(", ")]
    assert reasons and all(name in rated_names and stars.endswith("★") for name, stars in reasons)
    assert any(caption.value.startswith("Reasons are exact") for caption in at.caption)

    at = open_page(rated_app(app, GOOD_PROFILE_SIZE + 2), "app_pages/recommendations.py")
    assert not any("still thin" in w.value for w in at.warning)


def test_recommendation_filters_are_applied(app):
    at = open_page(rated_app(app, 4), "app_pages/recommendations.py")
    catalogue = synthetic_catalogue()
    genre = at.multiselect(key="rec-genres").options[0]
    at.multiselect(key="rec-genres").select(genre).run()
    at.number_input(key="rec-min-ratings").set_value(100).run()
    assert_clean(at)
    table = at.dataframe[0].value
    assert len(table) > 0
    by_title = catalogue.set_index("display_title")
    assert all(genre in by_title.loc[title, "genres"] for title in table["Title"])
    assert (by_title.loc[table["Title"], "popularity"] >= 100).all()
    at.slider(key="rec-years").set_value((1990, 1999)).run()
    years = by_title.loc[at.dataframe[0].value["Title"], "year"]
    assert years.between(1990, 1999).all()


def test_compare_two_models_shows_overlap(app, shared_store):
    # A second configuration trained "in the training monitor" becomes a comparison choice.
    shared_store.get_or_train(shared_store.key("synthetic", "mf", epochs=2, embedding_dim=4))
    at = open_page(rated_app(app, 4), "app_pages/recommendations.py")
    picker = at.selectbox(key="rec-compare-model")
    assert any("embedding_dim=4" in option for option in picker.options)
    metric = at.metric[0]
    assert metric.label == "In both top-10 lists"
    shared = int(metric.value.split(" of ")[0])
    left, right = at.dataframe[1].value, at.dataframe[2].value
    assert shared == len(set(left["Title"]) & set(right["Title"]))
    assert metric.proto.delta.startswith("Jaccard")


# --- because you watched --------------------------------------------------------------------------------
def test_because_you_watched_lists_similar_movies(app):
    titles = synthetic_titles()
    at = open_page(app().run(), "app_pages/because_you_watched.py")
    assert "For example" in at.info[0].value
    at.text_input(key="byw-query-synthetic").input(titles[40]).run()
    assert_clean(at)
    assert at.subheader[0].value == f"Because you watched {titles[40]}"
    bars = plotly_spec(at, "")["data"][0]
    similarity = array(bars["x"])
    assert len(bars["y"]) == 10 and titles[40] not in bars["y"]
    assert (np.diff(similarity) >= 0).all() and similarity.max() <= 1.0 + 1e-6  # drawn bottom-up: best on top
    similar_keys = [c.key for c in at.segmented_control if c.key.startswith("byw-rate-")]
    assert len(similar_keys) == 10
    rate(at, similar_keys[0], 4.0)
    assert profile_of(at).ratings == {int(similar_keys[0].rsplit("-", 1)[1]): 4.0}


def test_because_you_watched_asks_which_one_when_ambiguous(app):
    titles = synthetic_titles()
    at = open_page(app().run(), "app_pages/because_you_watched.py")
    at.text_input(key="byw-query-synthetic").input("synthetic movie").run()
    assert_clean(at)
    choices = at.radio[0]
    assert choices.label == "Did you mean…" and len(choices.options) == 5
    assert all(option in titles for option in choices.options)
    assert at.subheader[0].value == f"Because you watched {choices.options[0]}"  # the first until told otherwise
    second = choices.options[1]
    choices.set_value(titles.index(second)).run()  # values are item indices, shown as titles
    assert_clean(at)
    assert at.subheader[0].value == f"Because you watched {second}"


def test_because_you_watched_says_when_nothing_matches(app):
    at = open_page(app().run(), "app_pages/because_you_watched.py")
    at.text_input(key="byw-query-synthetic").input("zzzzqqqq xxyy").run()
    assert_clean(at)
    assert "No title looks like" in at.warning[0].value


# --- latent map ------------------------------------------------------------------------------------------
def test_latent_map_places_you_and_moves_with_your_ratings(app):
    at = open_page(app().run(), "app_pages/latent_map.py")
    spec = plotly_spec(at, "map-chart")
    names = [trace.get("name") for trace in spec["data"]]
    assert "you are here" not in names
    assert sum(len(array(trace["x"])) for trace in spec["data"]) == 500  # synthetic has 500 items
    assert "Axis 1" in at.metric[0].label

    at = open_page(rated_app(app, 3), "app_pages/latent_map.py")
    spec = plotly_spec(at, "map-chart")
    traces = {trace.get("name"): trace for trace in spec["data"]}
    assert len(array(traces["rated by you"]["x"])) == 3
    assert len(array(traces["recommended for you"]["x"])) == 10
    before = (array(traces["you are here"]["x"])[0], array(traces["you are here"]["y"])[0])
    at.switch_page("app_pages/rate_movies.py").run()
    rate(at, batch_keys(at)[3], 5.0)
    spec = plotly_spec(open_page(at, "app_pages/latent_map.py"), "map-chart")
    moved = next(trace for trace in spec["data"] if trace.get("name") == "you are here")
    assert (array(moved["x"])[0], array(moved["y"])[0]) != before

    at.toggle(key="map-3d").set_value(True).run()
    assert_clean(at)
    assert plotly_spec(at, "map-3d-chart")["data"][0]["type"] == "scatter3d"


def test_latent_map_colours_by_popularity(app):
    at = open_page(app().run(), "app_pages/latent_map.py")
    at.segmented_control(key="map-colour").set_value("popularity").run()
    assert_clean(at)
    trace = plotly_spec(at, "map-chart")["data"][0]
    colours = array(trace["marker"]["color"])
    assert trace["marker"]["showscale"] is True and len(colours) == 500
    popularity = synthetic_catalogue()["popularity"].to_numpy()
    assert np.allclose(np.sort(colours), np.sort(np.log10(1 + popularity)))


# --- training monitor ----------------------------------------------------------------------------------------
def test_training_monitor_runs_a_short_job_and_draws_its_curve(app, use_store, tmp_path):
    store = use_store(ModelStore(root=tmp_path / "monitor", device="cpu"))
    at = open_page(app().run(), "app_pages/training_monitor.py")
    at.number_input(key="monitor-mf-epochs").set_value(3)
    at.number_input(key="monitor-mf-embedding_dim").set_value(6)
    next(b for b in at.button if b.label == "Train").click().run()
    assert_clean(at)
    jobs = [job for job in store.jobs() if job.key.config.embedding_dim == 6]
    assert len(jobs) == 1 and jobs[0].key.config.epochs == 3
    assert jobs[0].wait(TIMEOUT)
    at.run()
    assert_clean(at)
    assert jobs[0].state == "done"
    assert any(s.value.startswith("Done in") for s in at.success)
    loss = plotly_spec(at, "monitor-live-chart")["data"][0]
    assert array(loss["x"]).tolist() == [1, 2, 3]
    assert np.allclose(array(loss["y"]), [event.loss for event in jobs[0].events])
    runs = at.dataframe[0].value
    assert "embedding_dim=6, epochs=3" in set(runs["settings"])
    assert {"rmse", "ndcg@10"} <= set(runs.columns)


def test_training_monitor_form_fits_every_model(app):
    at = open_page(app().run(), "app_pages/training_monitor.py")
    for name in model_names():
        at.selectbox(key="monitor-model").set_value(name).run()
        assert_clean(at)
        config = get_model_class(name).Config()
        for field in dataclasses.fields(config):
            widget = at.get_by_key(f"monitor-{name}-{field.name}")
            default = dict(state.app_hyper(name)).get(field.name, getattr(config, field.name))
            assert widget.value == default, (name, field.name)
            if field.name in ("optimizer", "schedule", "loss", "solver", "confidence", "cell"):
                assert widget.type == "selectbox" and default in widget.options


def test_training_monitor_rejects_bad_settings_plainly(app):
    at = open_page(app().run(), "app_pages/training_monitor.py")
    at.number_input(key="monitor-mf-embedding_dim").set_value(0)
    next(b for b in at.button if b.label == "Train").click().run()
    assert not at.exception
    assert "These settings do not work" in at.error[0].value and "embedding_dim" in at.error[0].value


# --- errors never show a traceback ---------------------------------------------------------------------------
def test_missing_dataset_is_explained_and_synthetic_offered(app, monkeypatch, tmp_path):
    monkeypatch.setenv("RECENGINE_DATA_DIR", str(tmp_path / "no-data-here"))
    monkeypatch.setenv(state.DATASET_ENV, "ml-1m")
    at = app().run()
    assert not at.exception
    assert at.error[0].value.startswith("**ml-1m is not on this machine.**")
    advice = at.code[0].value
    assert "RECENGINE_DATA_DIR" in advice and "python -m recengine download ml-1m" in advice
    # A failed download (no network here; the loader is replaced so nothing is fetched) is a message.
    def no_network(name, progress=None):
        raise DownloadError(f"could not reach files.grouplens.org for {name}")

    monkeypatch.setattr(ui.widgets, "download_dataset", no_network)
    next(b for b in at.button if b.label == "Download ml-1m now").click().run()
    assert not at.exception
    assert any("The download did not work" in e.value and "could not reach" in e.value for e in at.error)
    next(b for b in at.button if b.label == "Use the synthetic dataset instead").click().run()
    assert_clean(at)
    assert at.title[0].value == "Rate movies" and at.sidebar.selectbox(key=state.DATASET_KEY).value == "synthetic"


def test_a_library_error_becomes_a_message(app, monkeypatch):
    monkeypatch.setenv(state.HYPER_ENV, json.dumps({"mf": {"embedding_dim": -3}}))
    at = app().run()
    assert not at.exception
    assert "That did not work" in at.error[0].value and "embedding_dim" in at.error[0].value


# --- real data ------------------------------------------------------------------------------------------------
@pytest.fixture
def ml100k_app(app, monkeypatch):
    require_release("ml-100k")
    monkeypatch.setenv(state.DATASET_ENV, "ml-100k")
    return app


@pytest.mark.slow
def test_pages_render_on_ml100k_and_forest_gump_is_found(ml100k_app):
    at = ml100k_app().run()
    assert_clean(at)
    batch = batch_keys(at, "ml-100k")
    assert len(batch) == 6
    assert at.segmented_control(key=batch[0]).options[0] == "1"  # ml-100k's scale starts at 1 star
    rate(at, batch[0], 5.0)
    for page in PAGES:
        open_page(at, page)
    at = open_page(at, "app_pages/because_you_watched.py")
    at.text_input(key="byw-query-ml-100k").input("forest gump").run()
    assert_clean(at)
    assert at.subheader[0].value == "Because you watched Forrest Gump (1994)"
    assert not at.radio  # an exact enough match needs no "did you mean"
    at.text_input(key="byw-query-ml-100k").input("star trek").run()
    assert_clean(at)
    assert at.radio[0].label == "Did you mean…"
    assert sum(option.startswith("Star Trek") for option in at.radio[0].options) >= 3


@pytest.mark.slow
def test_each_dataset_keeps_its_own_profile(ml100k_app):
    at = ml100k_app().run()
    at.sidebar.selectbox(key=state.DATASET_KEY).set_value("synthetic").run()
    assert_clean(at)
    rate(at, batch_keys(at, "synthetic")[0], 2.0)
    at.sidebar.selectbox(key=state.DATASET_KEY).set_value("ml-100k").run()
    assert_clean(at)
    assert profile_of(at, "ml-100k").ratings == {}
    rate(at, batch_keys(at, "ml-100k")[0], 4.0)
    assert "**Your profile** · 1 movie rated" in [m.value for m in at.sidebar.markdown]
    assert list(profile_of(at, "ml-100k").ratings.values()) == [4.0]
    assert list(profile_of(at, "synthetic").ratings.values()) == [2.0]
    at.sidebar.selectbox(key=state.DATASET_KEY).set_value("synthetic").run()
    assert [c.value for c in at.segmented_control if c.value is not None] == [2.0]
