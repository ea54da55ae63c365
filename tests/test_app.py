"""The Streamlit app, page by page, with `streamlit.testing.v1.AppTest`.

Most tests run on the synthetic dataset with tiny configurations (`QUICK`: MF with 2 epochs and 8
factors, and as small for the other families, set through $RECENGINE_APP_HYPER) so a model trains
in about a second; the trained models are shared by the tests of this module through one store. Tests on real ml-100k are skipped when
$RECENGINE_DATA_DIR does not hold it. Streamlit's caches are cleared around every test.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import streamlit as st
from conftest import require_release
from streamlit.testing.v1 import AppTest

import ui.cached
import ui.widgets
from recengine.data.movielens import DownloadError, load_dataset
from recengine.models.base import EpochEvent, get_model_class, model_names
from recengine.models.mf import MFConfig
from recengine.onboarding import GOOD_PROFILE_SIZE
from recengine.recommend import DEFAULT_MIN_RATINGS, RecommendationFilter, popularity_overlap, recommend_profile, similar_to, watch_next
from recengine.store import ArtefactInfo, ModelKey, ModelStore, TrainingJob
from recengine.training import SCHEDULES
from ui import charts, runs, state, widgets
from ui.config_form import changed_values, field_choices, field_docs

APP = Path(__file__).resolve().parents[1] / "app.py"
QUICK = {
    "mf": {"epochs": 2, "embedding_dim": 8},
    "neural": {"epochs": 2, "embedding_dim": 8},
    "als": {"iterations": 3, "factors": 8},
    "seq-pooling": {"epochs": 2, "embedding_dim": 8},
    "seq-transformer": {"epochs": 1, "embedding_dim": 8, "n_heads": 1, "n_layers": 1},
}
PAGES = {
    "app_pages/rate_movies.py": "Rate movies",
    "app_pages/recommendations.py": "Recommendations",
    "app_pages/because_you_watched.py": "Because you watched…",
    "app_pages/latent_map.py": "Latent map",
    "app_pages/training_monitor.py": "Training monitor",
    "app_pages/profiles.py": "Your profiles",
    "app_pages/upload.py": "Your data",
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
    profile.shown.update({1, 5})
    assert len(profile) == 1
    # not seen: marked so, or offered earlier and left unrated (item 5 was rated after all)
    assert profile.not_seen == {1, 3}
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


def test_recommendations_list_reasons_and_the_thin_profile_flag(app, shared_store):
    at = open_page(rated_app(app, 3), "app_pages/recommendations.py")
    assert "Your profile is still thin: 3 of about 10 ratings" in at.warning[0].value
    table = at.dataframe[0].value
    # the flag's figure is about the list shown
    shown = [synthetic_titles().index(title) for title in table["Title"]]
    train = shared_store.split("synthetic", state.APP_SPLIT, state.APP_SEED).train
    share = popularity_overlap(shown, profile_of(at).ratings, train)
    assert f"({share:.0%} of your top 10 are among the 10 most-watched movies)" in at.warning[0].value
    assert len(table) == 20
    rated_titles = set(synthetic_titles()[i] for i in profile_of(at).ratings)
    assert not rated_titles & set(table["Title"])
    assert table["Predicted"].between(1.0, 5.0).all()
    # The default order blends in popularity and co-watching; the page passes its novelty control on.
    at.slider(key="rec-novelty").set_value(0.0).run()
    model = shared_store.get(shared_store.key("synthetic", "mf", hyper=QUICK["mf"]))
    expected = recommend_profile(model, synthetic_catalogue(), profile_of(at).ratings, k=20,
                                 filters=RecommendationFilter(min_ratings=20), novelty=0.0, explain=False)
    assert at.dataframe[0].value["Title"].tolist() == [rec.title for rec in expected]
    rated_names = {title.rsplit(" (", 1)[0] for title in rated_titles}
    reasons = [part.rsplit(" ", 1) for row in table["Because you rated"] for part in row.split(", ")]
    assert reasons and all(name in rated_names and stars.endswith("★") for name, stars in reasons)
    assert any(caption.value.startswith("Reasons are exact") for caption in at.caption)

    at = open_page(rated_app(app, GOOD_PROFILE_SIZE + 2), "app_pages/recommendations.py")
    assert not any("still thin" in w.value for w in at.warning)


def test_recommendations_hear_what_you_have_not_seen(app, shared_store):
    at = app().run()
    keys = batch_keys(at)
    items = [int(key.rsplit("-", 1)[1]) for key in keys]
    for key in keys[:3]:
        rate(at, key, 5.0)
    for item in items[3:]:
        at.button(key=f"skip-{item}").click().run()
    profile = profile_of(at)
    assert profile.not_seen == set(items[3:])
    at = open_page(at, "app_pages/recommendations.py")
    model = shared_store.get(shared_store.key("synthetic", "mf", hyper=QUICK["mf"]))
    page = dict(k=20, filters=RecommendationFilter(min_ratings=20), explain=False)
    expected = recommend_profile(model, synthetic_catalogue(), profile.ratings, not_seen=profile.not_seen, **page)
    assert at.dataframe[0].value["Title"].tolist() == [rec.title for rec in expected]
    # the "not seen" answers move the list, and the movies passed over are hidden until asked for
    unaware = recommend_profile(model, synthetic_catalogue(), profile.ratings, **page)
    assert [rec.title for rec in unaware] != [rec.title for rec in expected]
    passed_titles = set(synthetic_catalogue()["display_title"].iloc[items[3:]])
    assert not passed_titles & set(at.dataframe[0].value["Title"])
    assert any(f"the {len(items) - 3} you passed over are hidden" in caption.value for caption in at.caption)
    at.toggle(key="rec-hide-passed").set_value(False).run()
    listed = recommend_profile(model, synthetic_catalogue(), profile.ratings, not_seen=profile.not_seen, hide_not_seen=False, **page)
    assert at.dataframe[0].value["Title"].tolist() == [rec.title for rec in listed]
    assert passed_titles & set(at.dataframe[0].value["Title"])  # popular picks: some make the top 20 again
    assert not any("are hidden" in caption.value for caption in at.caption)
    # the choice is the profile's: it survives leaving the page, and the Rate movies preview follows it
    assert profile_of(at).hide_not_seen is False
    at = open_page(at, "app_pages/rate_movies.py")
    preview = dict(k=8, filters=RecommendationFilter(min_ratings=20), explain=False, not_seen=profile.not_seen)
    shown_titles = [rec.title for rec in recommend_profile(model, synthetic_catalogue(), profile.ratings, hide_not_seen=False, **preview)]
    hidden_titles = [rec.title for rec in recommend_profile(model, synthetic_catalogue(), profile.ratings, **preview)]
    assert shown_titles != hidden_titles
    assert [line.split("**")[1] for line in preview_lines(at)] == shown_titles
    # ... and so do the latent map's "recommended for you" diamonds (those among the map's movies)
    at = open_page(at, "app_pages/latent_map.py")
    diamonds = next(trace for trace in plotly_spec(at, "map-chart")["data"] if trace.get("name") == "recommended for you")
    marked = {text.split("</b>")[0].removeprefix("<b>") for text in diamonds["text"]}
    on_map = [
        rec.title
        for rec in recommend_profile(
            model, synthetic_catalogue(), profile.ratings, k=10, explain=False, not_seen=profile.not_seen, hide_not_seen=False
        )
    ]
    assert marked and marked <= set(on_map) and marked & passed_titles
    at = open_page(at, "app_pages/recommendations.py")
    assert at.toggle(key="rec-hide-passed").value is False
    at.toggle(key="rec-hide-passed").set_value(True).run()
    assert profile_of(at).hide_not_seen is True
    assert not passed_titles & set(at.dataframe[0].value["Title"])


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


def open_tab(at: AppTest, label: str) -> AppTest:
    """Switch the recommendations page's tabs (only the open tab runs)."""
    at.session_state["rec-view"] = label
    at.run()
    assert_clean(at)
    return at


def test_compare_two_models_shows_overlap(app, shared_store):
    # A second configuration trained "in the training monitor" becomes a comparison choice.
    shared_store.get_or_train(shared_store.key("synthetic", "mf", epochs=2, embedding_dim=4))
    at = open_page(rated_app(app, 4), "app_pages/recommendations.py")
    assert [tab.label for tab in at.tabs] == ["For you", "Watch next", "Compare two models"]
    assert len(at.dataframe) == 1  # the comparison does not run until its tab is opened
    open_tab(at, "Compare two models")
    picker = at.selectbox(key="rec-compare-model")
    assert any("embedding_dim=4" in option for option in picker.options)
    metric = at.metric[0]
    assert metric.label == "In both top-10 lists"
    shared = int(metric.value.split(" of ")[0])
    left, right = at.dataframe[0].value, at.dataframe[1].value
    assert shared == len(set(left["Title"]) & set(right["Title"]))
    assert metric.proto.delta.startswith("Jaccard")


def test_watch_next_follows_the_order_of_your_ratings(app, shared_store):
    at = open_tab(open_page(rated_app(app, 3), "app_pages/recommendations.py"), "Watch next")
    assert [s.label for s in at.status] == [at.status[0].label] and at.status[0].label.startswith(
        "Trained seq-transformer on synthetic in"
    )  # trained on first use, with the page's progress indicator
    picker = at.segmented_control(key="rec-next-model")
    assert picker.value == "seq-transformer"
    assert set(picker.options) == {"seq-pooling", "seq-lstm", "seq-transformer"}
    assert len(at.dataframe) == 1  # only the open tab runs
    ratings = dict(profile_of(at).ratings)
    titles = synthetic_titles()
    history = next(m.value for m in at.markdown if m.value.startswith("**Your movies in the order you rated them:**"))
    assert history.index(titles[list(ratings)[0]]) < history.index(titles[list(ratings)[-1]]) < history.index("*(latest)*")

    table = at.dataframe[0].value
    assert list(table.columns) == ["Title", "Year", "Genres", "Chance", "Why"] and len(table) == 20
    # The same list as the library gives for the store's model and the profile in rating order.
    key = shared_store.key("synthetic", "seq-transformer", split="last", hyper=QUICK["seq-transformer"])
    page_filters = RecommendationFilter(min_ratings=20)  # the page's default filters
    expected = watch_next(shared_store.get(key), synthetic_catalogue(), ratings, k=20, filters=page_filters)
    assert table["Title"].tolist() == [rec.title.rsplit(" (", 1)[0] for rec in expected]
    assert table["Year"].tolist() == [rec.year for rec in expected]
    assert np.allclose(table["Chance"], [100 * rec.score for rec in expected])
    assert table["Chance"].is_monotonic_decreasing and (table["Chance"] > 0).all()
    rated_names = {titles[item].rsplit(" (", 1)[0] for item in ratings}
    assert not rated_names & set(table["Title"])
    for why in table["Why"]:
        common = why == "a common next pick, whatever you watched last"
        assert common or set(why.removeprefix("follows ").split(", ")) <= rated_names

    # Rating one more movie makes it the latest and changes what comes next.
    at.switch_page("app_pages/rate_movies.py").run()
    rate(at, batch_keys(at)[3], 4.0)
    at = open_tab(open_page(at, "app_pages/recommendations.py"), "Watch next")
    newest = list(profile_of(at).ratings)[-1]
    history = next(m.value for m in at.markdown if m.value.startswith("**Your movies in the order you rated them:**"))
    assert history.endswith(f"{titles[newest]} *(latest)*")
    assert not at.status  # trained once, now from memory
    assert not np.allclose(at.dataframe[0].value["Chance"], table["Chance"])


# --- because you watched --------------------------------------------------------------------------------
def test_because_you_watched_lists_similar_movies(app, shared_store):
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
    # only movies with enough ratings to have a meaningful place in taste space (the page's floor)
    popularity = synthetic_catalogue()["popularity"].to_numpy()
    shown = [int(key.rsplit("-", 1)[1]) for key in similar_keys]
    assert (popularity[shown] >= DEFAULT_MIN_RATINGS).all()
    model = shared_store.get(shared_store.key("synthetic", "mf", hyper=QUICK["mf"]))
    floor = RecommendationFilter(min_ratings=DEFAULT_MIN_RATINGS)
    # (the cards sit in two columns, so compare as sets)
    assert set(shown) == {item for item, _, _ in similar_to(model, 40, 10, catalogue=synthetic_catalogue(), filters=floor)}
    high = int(np.percentile(popularity, 75))
    at.number_input(key="byw-min-ratings").set_value(high).run()
    raised = {int(c.key.rsplit("-", 1)[1]) for c in at.segmented_control if c.key.startswith("byw-rate-")}
    assert (popularity[list(raised)] >= high).all() and raised != set(shown)
    assert raised == {item for item, _, _ in similar_to(model, 40, 10, catalogue=synthetic_catalogue(), filters=RecommendationFilter(min_ratings=high))}
    at.number_input(key="byw-min-ratings").set_value(10**6).run()
    assert_clean(at)
    assert "No other movie has that many ratings" in at.info[0].value
    at.number_input(key="byw-min-ratings").set_value(DEFAULT_MIN_RATINGS).run()
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


def test_latent_map_of_a_sequence_model_says_why_you_are_not_on_it(app, monkeypatch):
    at = rated_app(app, 3)
    at.sidebar.selectbox(key=state.MODEL_KEY).set_value("seq-pooling").run()
    at = open_page(at, "app_pages/latent_map.py")
    traces = {trace.get("name"): trace for trace in plotly_spec(at, "map-chart")["data"]}
    assert "you are here" not in traces
    assert len(array(traces["rated by you"]["x"])) == 3 and len(array(traces["recommended for you"]["x"])) == 10
    movies = [trace for name, trace in traces.items() if name not in ("rated by you", "recommended for you")]
    assert sum(len(array(trace["x"])) for trace in movies) == 500
    assert "No “you are here” marker:** seq-pooling reads your history" in at.info[0].value
    assert at.metric[0].label == "Axis 1"
    # With tied weights the history vector lives among the item embeddings: the marker is back.
    monkeypatch.setenv(state.HYPER_ENV, json.dumps({**QUICK, "seq-pooling": {**QUICK["seq-pooling"], "tie_weights": True}}))
    at.run()
    assert_clean(at)
    names = [trace.get("name") for trace in plotly_spec(at, "map-chart")["data"]]
    assert "you are here" in names and not at.info


# --- training monitor ----------------------------------------------------------------------------------------
def test_training_monitor_trains_a_sequence_model_and_draws_its_mrr(app, use_store, tmp_path):
    store = use_store(ModelStore(root=tmp_path / "monitor", device="cpu"))
    at = open_page(app().run(), "app_pages/training_monitor.py")
    at.selectbox(key="monitor-model").set_value("seq-pooling").run()
    at.number_input(key="monitor-seq-pooling-epochs").set_value(3)
    at.number_input(key="monitor-seq-pooling-embedding_dim").set_value(6)
    next(b for b in at.button if b.label == "Train").click().run()
    assert_clean(at)
    (job,) = [job for job in store.jobs() if job.key.model == "seq-pooling"]
    assert job.key.config.epochs == 3 and job.key.config.embedding_dim == 6 and job.wait(TIMEOUT)
    at.run()
    assert_clean(at)
    assert job.state == "done"
    spec = plotly_spec(at, "monitor-live-chart")
    assert [a["text"] for a in spec["layout"]["annotations"]] == ["training loss", "mrr"]
    loss, mrr = spec["data"]
    assert array(mrr["x"]).tolist() == [1, 2, 3]
    assert np.allclose(array(mrr["y"]), [event.metrics["mrr"] for event in job.events])
    assert np.allclose(array(loss["y"]), [event.loss for event in job.events])
    shown = {m.label: m.value for m in at.metric}
    assert shown["Test mrr"] == f"{job.metrics['mrr']:.4f}" and "Test rmse" not in shown


def fake_artefact(
    slug: str, model: str, split: str, metrics: dict, fit_seconds: float = 2.5, dataset: str = "synthetic"
) -> ArtefactInfo:
    """What `ModelStore.artefacts()` reports for a saved model with default settings."""
    return ArtefactInfo(
        slug, Path(slug), dataset, split, 42, model, {}, metrics, fit_seconds, 1000, "2026-01-01T00:00:00", False, "CPU"
    )


def test_comparison_table_and_ranking_from_artefacts():
    artefacts = [
        fake_artefact(
            "a", "mf", "random", {"rmse": 0.91, "mae": 0.72, "precision@10": 0.10, "ndcg@10": 0.12, "map@10": 0.05, "mrr": 0.3}
        ),
        fake_artefact("b", "als", "random", {"precision@10": 0.20, "ndcg@10": 0.25, "map@10": 0.11, "mrr": 0.4}, fit_seconds=0.0),
        fake_artefact("c", "seq-pooling", "user", {"mrr": 0.05, "ndcg@10": 0.07, "hit@10": 0.1}),
        fake_artefact("d", "mf", "random", {"rmse": 0.95}, dataset="ml-100k"),
    ]
    table = runs.comparison_table(artefacts, "synthetic", "random")
    assert table.index.tolist() == ["b", "a"]  # by model name
    assert list(table.columns) == [
        "dataset", "split", "model", "settings", "RMSE", "MAE", "P@10", "NDCG@10", "MAP@10", "MRR", "fit s", "device"
    ]
    assert table.loc["a", "RMSE"] == 0.91 and np.isnan(table.loc["b", "RMSE"])  # implicit: no RMSE
    assert table.loc["a", "fit s"] == 2.5 and np.isnan(table.loc["b", "fit s"])  # not recorded: blank
    assert table.loc["a", "split"] == "random · seed 42" and table.loc["a", "device"] == "CPU"
    assert table.loc["a", "settings"] == "defaults"
    assert len(runs.comparison_table(artefacts)) == 4 and runs.comparison_table(artefacts, split="user").index.tolist() == ["c"]
    assert runs.comparison_table([], "synthetic").empty

    ndcg = runs.metric_ranking(runs.comparison_table(artefacts, "synthetic"), "ndcg@10")
    assert ndcg.index.tolist() == ["als · defaults (random · seed 42)", "mf · defaults (random · seed 42)",
                                   "seq-pooling · defaults (user · seed 42)"]
    assert ndcg.tolist() == [0.25, 0.12, 0.07]
    rmse = runs.metric_ranking(runs.comparison_table(artefacts, split="random"), "rmse")  # lower is better; als has none
    assert rmse.tolist() == [0.91, 0.95] and rmse.index.tolist() == ["mf · defaults (synthetic)", "mf · defaults (ml-100k)"]
    figure = charts.metric_bars(rmse, "rmse", lower_is_better=True)
    assert list(figure.data[0].y) == list(rmse.index[::-1])  # drawn bottom-up: the best on top
    assert figure.data[0].marker.color[-1] == charts.ACCENT and "lower is better" in figure.layout.xaxis.title.text


def test_comparison_text_is_blank_where_a_figure_is_missing_and_sorts_like_the_numbers():
    table = runs.comparison_table([
        fake_artefact("a", "mf", "random", {"rmse": 0.91, "ndcg@10": 0.1234567}, fit_seconds=12.34),
        fake_artefact("b", "als", "random", {"ndcg@10": 0.25}, fit_seconds=0.0),
        fake_artefact("c", "neural", "random", {"rmse": 0.875}, fit_seconds=3.0),
    ])
    text = runs.comparison_text(table)
    assert text["RMSE"].tolist() == ["", "0.9100", "0.8750"] and text["NDCG@10"].tolist() == ["0.2500", "0.1235", ""]
    assert text["fit s"].tolist() == ["", "12.3", " 3.0"]  # padded: sorting the text sorts the numbers
    assert sorted(text["fit s"]) == ["", " 3.0", "12.3"]
    assert text["model"].tolist() == table["model"].tolist() and table["fit s"].iloc[2] == 3.0  # the table is untouched


def test_past_runs_text_leaves_missing_cells_blank_not_none():
    """A cancelled run has no figures, size or save time: the page shows blanks, not "None"."""
    table = pd.DataFrame.from_dict({
        "a": {"model": "mf", "state": "saved", "rmse": 0.9448, "ndcg@10": 0.11984, "fit s": 1.54, "on disk": "1.4 MB", "in memory": True, "saved at": "2026-11-22 14:00"},
        "b": {"model": "mf", "state": "cancelled"},
        "c": {"model": "als", "state": "saved", "ndcg@10": 0.25, "fit s": 12.0, "on disk": "0.2 MB", "in memory": False, "saved at": "2026-11-22 13:00"},
    }, orient="index")
    text = runs.figures_as_text(table, {"rmse": 4, "ndcg@10": 4, "fit s": 1, "not a column": 2})
    assert text["rmse"].tolist() == ["0.9448", "", ""] and text["ndcg@10"].tolist() == ["0.1198", "", "0.2500"]
    assert text["fit s"].tolist() == [" 1.5", "", "12.0"]
    assert text["on disk"].tolist() == ["1.4 MB", "", "0.2 MB"] and text["saved at"].tolist()[1] == ""
    assert text["in memory"].tolist()[::2] == [True, False] and pd.isna(text["in memory"].iloc[1])  # a checkbox stays one
    assert not text.drop(columns="in memory").isna().to_numpy().any()
    assert np.isnan(table.loc["b", "rmse"])  # the table itself is untouched


def test_batch_summary_counts_the_runs():
    def job(model: str, state_name: str) -> TrainingJob:
        made = TrainingJob(ModelKey("synthetic", "random", 42, model, get_model_class(model).Config()))
        made._set_state(state_name)
        return made

    running = job("als", "running")
    running._on_epoch(EpochEvent(epoch=2, epochs=15, loss=0.5, seconds=0.1))
    jobs = [job("mf", "done"), job("neural", "failed"), running, job("seq-lstm", "queued")]
    summary = runs.batch_summary(jobs)
    assert summary.startswith("1 of 4 done · failed neural · training als: Epoch 2/15 · loss 0.5000")


def test_training_monitor_compares_saved_models_and_trains_them_all(app, use_store, tmp_path):
    store = use_store(ModelStore(root=tmp_path / "compare", device="cpu"))
    mf = store.get_or_train(store.key("synthetic", "mf", hyper=QUICK["mf"]))
    pooling_key = store.key("synthetic", "seq-pooling", split="last", hyper=QUICK["seq-pooling"])
    store.get_or_train(pooling_key)
    meta_path = store.path(pooling_key) / "meta.json"  # an older artefact: no fit_seconds recorded
    meta = json.loads(meta_path.read_text())
    del meta["fit_seconds"]
    meta_path.write_text(json.dumps(meta))

    at = open_page(app().run(), "app_pages/training_monitor.py")
    assert at.selectbox(key="compare-dataset").value == "synthetic" and at.selectbox(key="compare-split").value == "random"
    table = at.dataframe[0].value.reset_index(drop=True)
    assert table["model"].tolist() == ["mf"]
    mf_metrics = store.metrics(store.key("synthetic", "mf", hyper=QUICK["mf"]))
    assert table.loc[0, "RMSE"] == f"{mf_metrics['rmse']:.4f}" and table.loc[0, "NDCG@10"] == f"{mf_metrics['ndcg@10']:.4f}"
    assert table.loc[0, "fit s"] == f"{mf.fit_seconds:.1f}" and table.loc[0, "device"] == "CPU"
    bars = plotly_spec(at, "compare-chart")["data"][0]
    assert np.allclose(array(bars["x"]), [mf_metrics["ndcg@10"]])

    at.selectbox(key="compare-split").set_value("All splits").run()
    assert_clean(at)
    table = at.dataframe[0].value.set_index("model")
    assert sorted(table.index) == ["mf", "seq-pooling"]
    assert table.loc["seq-pooling", "RMSE"] == "" and table.loc["seq-pooling", "fit s"] == ""  # blank, not "None" or 0
    assert table.loc["seq-pooling", "MRR"].strip() and table.loc["mf", "fit s"].strip()
    assert at.button(key="compare-train-all").disabled  # one split at a time
    at.segmented_control(key="compare-metric").set_value("rmse").run()
    bars = plotly_spec(at, "compare-chart")["data"][0]
    assert len(bars["y"]) == 1 and "mf" in bars["y"][0]  # only rating models have an RMSE

    at.selectbox(key="compare-split").set_value("last").run()
    button = at.button(key="compare-train-all")
    assert button.label == "Train every model with defaults on synthetic · last" and not button.disabled
    button.click().run()
    assert_clean(at)
    jobs = store.jobs()
    for job in jobs:
        job.cancel()  # the defaults take a while: stop at the next epoch boundary
    assert sorted(job.key.model for job in jobs) == sorted(model_names())
    assert all(job.key.split == "last" and job.key.config == get_model_class(job.key.model).Config() for job in jobs)
    assert any(s.value.endswith(f" of {len(jobs)} done") or f" of {len(jobs)} done · " in s.value for s in at.info)
    assert all(job.wait(TIMEOUT) for job in jobs)
    done = sum(job.state == "done" for job in jobs)  # the first may finish before it is told to stop
    at.run()
    assert_clean(at)
    assert any(s.value.startswith(f"{done} of {len(jobs)} done · cancelled ") for s in at.success)


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
    past = at.dataframe(key="monitor-runs").value
    assert "embedding_dim=6, epochs=3" in set(past["settings"])
    assert {"rmse", "ndcg@10"} <= set(past.columns)


def test_training_monitor_form_fits_every_model(app):
    at = open_page(app().run(), "app_pages/training_monitor.py")
    for name in model_names():
        at.selectbox(key="monitor-model").set_value(name).run()
        assert_clean(at)
        config = get_model_class(name).Config()
        for field in dataclasses.fields(config):
            widget = at.get_by_key(f"monitor-{name}-{field.name}")
            default = dict(state.app_hyper(name)).get(field.name, getattr(config, field.name))
            shown = ", ".join(str(part) for part in default) if isinstance(default, tuple) else default  # tuples as text
            assert widget.value == shown, (name, field.name)
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
