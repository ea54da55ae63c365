"""Hostile input in the app: the search boxes of "Rate movies" and "Because you watched", the
"How many" number, and the hyper-parameter form of the training monitor.

Each value of the shared table (`HOSTILE_TEXT` from the command-line tests) is typed into one
session after another; the page must show no exception element and either results or a plain
message (st.error / warning / info / caption) that echoes the input cleaned and short: no
control characters, at most a few dozen characters of it. The form never starts a training
with values its model's Config refuses (`store.start_training` is replaced by a recorder).
"""

from __future__ import annotations

import math
import shutil

import pytest
from streamlit.testing.v1 import AppTest

from conftest import real_data_dir
from test_app import app, open_page, shared_store, use_store  # noqa: F401 - fixtures
from test_hostile_cli import HOSTILE_TEXT
from ui import state, widgets

CONTROL = {"\x00", "\x1b", "\r"}
MAX_ECHO = 300  # the longest message about a query, including the sentence around it


def messages(at: AppTest) -> list[str]:
    """Every error, warning, info and caption text on the page."""
    return [element.value for kind in ("error", "warning", "info", "caption") for element in getattr(at, kind)]


def assert_no_exception(at: AppTest, case: str) -> None:
    assert not at.exception, (case, [e.value for e in at.exception])
    assert not at.error, (case, [e.value for e in at.error])


def assert_clean_echo(text: str, case: str) -> None:
    assert not set(text) & CONTROL, (case, repr(text))
    assert len(text) <= MAX_ECHO, (case, len(text))


# --- the echo helper --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("forest gump", "forest gump"),
        ("  star \t wars ", "star wars"),
        ("\x1b[31mred\x1b[0m", "\\[31mred \\[0m"),  # escape characters gone, brackets Markdown-escaped
        ("line\r\nbreak\x00", "line break"),
        ("*bold* `code` $x$", "\\*bold\\* \\`code\\` \\$x\\$"),
        ("x" * 10_000, "x" * 59 + "…"),
        ("🎬🍿 Amélie", "🎬🍿 Amélie"),
        ("", ""),
    ],
)
def test_quoted_cleans_clips_and_escapes(text, shown):
    assert widgets.quoted(text) == shown


# --- search boxes -----------------------------------------------------------------------------------
def test_because_you_watched_survives_every_hostile_query(app):
    at = open_page(app().run(), "app_pages/because_you_watched.py")
    for case, text in HOSTILE_TEXT.items():
        at.text_input(key="byw-query-synthetic").input(text).run()
        assert_no_exception(at, case)
        if not text.strip():
            assert at.info and at.info[0].value.startswith("For example"), case
            continue
        shown = [w.value for w in at.warning]
        if shown:  # nothing matched: say so, with the query cleaned and short
            assert shown[0].startswith("No title looks like"), (case, shown)
            assert_clean_echo(shown[0], case)
        else:  # something matched: either a choice to make or the similar movies
            assert at.radio or any(h.value.startswith("Because you watched ") for h in at.subheader), case


def test_because_you_watched_message_for_a_long_query_is_short(app):
    at = open_page(app().run(), "app_pages/because_you_watched.py")
    at.text_input(key="byw-query-synthetic").input("x" * 10_000).run()
    assert [w.value for w in at.warning] == ["No title looks like “" + "x" * 59 + "…”. Try fewer words, or the original title."]


def test_rate_movies_search_survives_every_hostile_query(app):
    at = open_page(app().run(), "app_pages/rate_movies.py")
    for case, text in HOSTILE_TEXT.items():
        at.text_input(key="rate-search-synthetic").input(text).run()
        assert_no_exception(at, case)
        for message in messages(at):
            assert_clean_echo(message, case)
        search_cards = [c for c in at.segmented_control if c.key.startswith("search-synthetic-")]
        no_match = [m for m in messages(at) if m.startswith("No title looks like")]
        if text.strip():
            assert bool(search_cards) != bool(no_match), (case, len(search_cards), no_match)
        else:
            assert not search_cards and not no_match, case
        assert len(search_cards) <= 6


def test_how_many_outside_its_range_is_ignored(app):
    """The number box is bounded (3..50): Streamlit keeps the previous value, so the page still
    lists the default 10 similar movies."""
    at = open_page(app().run(), "app_pages/because_you_watched.py")
    at.text_input(key="byw-query-synthetic").input("Synthetic Movie 1 (1996)").run()
    for k in (-1, 0, 2, 51, 2**53 - 1, 2**63):
        at.number_input(key="byw-k").set_value(k).run()
        assert not at.exception and not at.error, k
        assert at.number_input(key="byw-k").value == 10, k
        assert len([c for c in at.segmented_control if c.key.startswith("byw-rate-synthetic-")]) == 10, k
    at.number_input(key="byw-k").set_value(4).run()  # a value inside the range is taken
    assert len([c for c in at.segmented_control if c.key.startswith("byw-rate-synthetic-")]) == 4


# --- the hyper-parameter form -------------------------------------------------------------------------
@pytest.fixture
def monitor(app, shared_store, monkeypatch):
    """The training monitor, whose "Train" button only records the key it would train."""
    at = open_page(app().run(), "app_pages/training_monitor.py")
    started: list = []
    monkeypatch.setattr(shared_store, "start_training", lambda key: started.append(key))
    return at, started


def submit(at: AppTest) -> AppTest:
    return next(b for b in at.button if b.label == "Train").click().run()


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_numbers_never_reach_the_config(monitor, value):
    """Streamlit's number box keeps its previous value instead of NaN or infinity."""
    at, started = monitor
    at.number_input(key="monitor-mf-learning_rate").set_value(value)
    submit(at)
    assert not at.exception and not at.error
    assert at.number_input(key="monitor-mf-learning_rate").value == pytest.approx(0.005)
    assert [key.config.learning_rate for key in started] == [pytest.approx(0.005)]


FORM_NUMBERS = [
    ("learning_rate", -1.0, "learning_rate"),
    ("learning_rate", 0.0, "learning_rate"),
    ("reg_factors", -1e308, "reg_factors"),
    ("epochs", -1, "epochs"),
    ("epochs", 0, "epochs"),
    ("embedding_dim", -(2**53 - 1), "embedding_dim"),
]


@pytest.mark.parametrize(("field", "value", "named"), FORM_NUMBERS, ids=[f"{f}={v}" for f, v, _ in FORM_NUMBERS])
def test_the_form_refuses_hostile_numbers_plainly(monitor, field, value, named):
    at, started = monitor
    at.number_input(key=f"monitor-mf-{field}").set_value(value)
    submit(at)
    assert not at.exception, [e.value for e in at.exception]
    assert at.error and "These settings do not work" in at.error[0].value and named in at.error[0].value
    assert started == []


def test_the_form_refuses_an_absurd_embedding_size(monitor):
    at, started = monitor
    at.number_input(key="monitor-mf-embedding_dim").set_value(2**53 - 1)
    submit(at)
    assert not at.exception and at.error and started == []


NOT_LAYER_WIDTHS = {name: text for name, text in HOSTILE_TEXT.items() if name not in ("huge-int",)}


def test_the_form_refuses_hostile_layer_widths(monitor):
    at, started = monitor
    at.selectbox(key="monitor-model").set_value("neural").run()
    for case, text in NOT_LAYER_WIDTHS.items():
        at.text_input(key="monitor-neural-hidden").input(text)
        submit(at)
        assert not at.exception, (case, [e.value for e in at.exception])
        assert at.error and "These settings do not work" in at.error[0].value and "hidden" in at.error[0].value, case
        assert not set(at.error[0].value) & CONTROL, (case, at.error[0].value)
    assert started == []
    at.text_input(key="monitor-neural-hidden").input(" 16 , 8 ")
    submit(at)
    assert not at.error and [key.config.hidden for key in started] == [(16, 8)]


# --- the URL ----------------------------------------------------------------------------------------------
def test_hostile_dataset_in_the_url_falls_back_to_the_default(app):
    for case, text in HOSTILE_TEXT.items():
        at = app()
        at.query_params["dataset"] = text
        at.run()
        assert not at.exception, (case, [e.value for e in at.exception])
        assert not at.error, (case, [e.value[:200] for e in at.error])
        assert at.session_state["dataset"] == "synthetic", case  # the session's default ($RECENGINE_DEFAULT_DATASET)


# --- a damaged dataset --------------------------------------------------------------------------------------
def test_a_damaged_release_is_explained_with_the_fix(app, monkeypatch, tmp_path):
    real = real_data_dir()
    if real is None or not (real / "ml-100k").is_dir():
        pytest.skip("ml-100k not available (set RECENGINE_DATA_DIR)")
    shutil.copytree(real / "ml-100k", tmp_path / "ml-100k")
    ratings = tmp_path / "ml-100k" / "u.data"
    ratings.chmod(0o644)
    ratings.write_bytes(ratings.read_bytes()[:1000])
    monkeypatch.setenv("RECENGINE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv(state.DATASET_ENV, "ml-100k")
    at = app().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.error[0].value.startswith("**A file of ml-100k is damaged or altered,**")
    details = at.code[0].value
    assert str(ratings) in details and "truncated" in details and "python -m recengine download ml-100k --force" in details


def test_an_upload_named_in_the_url_is_opened(app, tmp_path):
    from recengine.data.upload import import_upload

    rows = [f"{u},{i},{1 + (u * i) % 5}" for u in range(1, 16) for i in range(1, 11) if (u + i) % 3]
    (tmp_path / "mine.csv").write_text("userId,movieId,rating\n" + "\n".join(rows) + "\n")
    import_upload(tmp_path / "mine.csv", "my-upload")
    at = app()
    at.query_params["dataset"] = "my-upload"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert at.session_state["dataset"] == "my-upload"


@pytest.mark.parametrize(("page", "key"), [
    ("app_pages/because_you_watched.py", "byw-min-ratings"),
    ("app_pages/recommendations.py", "rec-min-ratings"),
])
def test_a_ratings_floor_outside_its_range_is_ignored_or_empties_the_list_politely(app, page, key):
    """Negative floors are refused (the previous value stays); floors above every movie's count
    leave an empty list with a message, never an exception."""
    at = app().run()
    first = next(c.key for c in at.segmented_control if c.key.startswith("batch-"))
    at.segmented_control(key=first).set_value(at.segmented_control(key=first).options[-1]).run()
    at = open_page(at, page)
    if page.endswith("because_you_watched.py"):
        at.text_input(key="byw-query-synthetic").input("Synthetic Movie 1 (1996)").run()
    for floor in (-1, -(2**63)):
        at.number_input(key=key).set_value(floor).run()
        assert not at.exception and not at.error, floor
        assert at.number_input(key=key).value == 20, floor
    for floor in (10**6, 2**53 - 1):
        at.number_input(key=key).set_value(floor).run()
        assert not at.exception and not at.error, floor
        assert at.info and ("that many ratings" in at.info[0].value or "No movie passes these filters" in at.info[0].value), floor
