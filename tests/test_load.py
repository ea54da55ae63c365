"""The load test (benchmarks/load.py) in a reduced form, and the pieces it counts with.

The full benchmark drives 20 sessions for 60 s on ml-100k; here 3 sessions run for 10 s on the
synthetic dataset with a tiny model (no MovieLens data needed), and the error counting is
checked against a real server running a small app that fails on purpose. Every server is
started in its own process group and stopped at the end; the tests check nothing is left.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from streamlit.proto.Element_pb2 import Element

from conftest import import_script

pytestmark = pytest.mark.timeout(240)

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "load.py"
QUICK = {"mf": {"epochs": 2, "embedding_dim": 8}}


@pytest.fixture(scope="module")
def load():
    """benchmarks/load.py as a module."""
    with import_script(SCRIPT, "load_benchmark") as module:
        yield module


def alive(pid: int) -> bool:
    """True while `pid` is a live (not zombie) process."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


# --- pieces -----------------------------------------------------------------------------------------
def test_summary_line_round_trips_and_rejects_other_lines(load):
    summary = load.Summary(sessions=20, requests=812, errors=0, p50_ms=123.4, p95_ms=987.6, peak_rss_mb=701.2)
    line = summary.line()
    assert line == "sessions=20 requests=812 errors=0 p50_ms=123 p95_ms=988 peak_rss_mb=701"
    assert load.parse_summary(line + "\n") == {
        "sessions": 20, "requests": 812, "errors": 0, "p50_ms": 123, "p95_ms": 988, "peak_rss_mb": 701,
    }
    for bad in ("", "sessions=20 requests=812", line.replace("errors=0", "errors=x"), "note: " + line):
        with pytest.raises(ValueError, match="not a load summary line"):
            load.parse_summary(bad)


def test_percentile_is_numpys_linear_interpolation(load):
    values = [10.0, 20.0, 30.0, 40.0, 1000.0]
    assert load.percentile(values, 50) == 30.0
    assert load.percentile(values, 95) == pytest.approx(40.0 + 0.8 * 960.0)  # rank 3.8 of 0..4
    assert load.percentile([], 95) == 0.0


def test_exceptions_and_error_boxes_are_problems_other_elements_are_not(load):
    exception = Element()
    exception.exception.type = "ZeroDivisionError"
    exception.exception.message = "division by zero"
    error_box, warning_box, markdown = Element(), Element(), Element()
    error_box.alert.body, error_box.alert.format = "**Something went wrong**", 1
    warning_box.alert.body, warning_box.alert.format = "Your profile is still thin", 2
    markdown.markdown.body = "error"
    warning_exception = Element()
    warning_exception.exception.type, warning_exception.exception.is_warning = "Deprecation", True

    assert load.describe_problem(exception) == "exception ZeroDivisionError: division by zero"
    assert load.describe_problem(error_box) == "error box: **Something went wrong**"
    assert load.describe_problem(warning_box) is None
    assert load.describe_problem(markdown) is None
    assert load.describe_problem(warning_exception) is None


def test_tally_counts_each_failed_request_once(load):
    tally = load.Tally()
    good = load.Run({}, 120.0, [], "page")
    bad = load.Run({}, 80.0, ["exception KeyError: 3", "error box: no"], "page")
    tally.record(0, "rate", good)
    tally.record(1, "rate", bad)
    tally.record(1, "rate", good, "the sidebar says 2 movies rated, this session rated 3")
    tally.record(2, "open", None, "no script_finished within 30 s")
    assert tally.requests == 4
    assert tally.latencies_ms == [120.0, 80.0, 120.0]
    assert len(tally.errors) == 3
    assert tally.errors[0] == "session 1 rate: exception KeyError: 3; error box: no"
    assert tally.errors[2] == "session 2 open: no script_finished within 30 s"


def test_stop_group_ends_children_that_ignore_sigterm(load):
    # The shell and its two sleeps ignore SIGTERM (an ignored signal stays ignored across exec).
    process = subprocess.Popen(
        ["sh", "-c", 'trap "" TERM; sleep 300 & sleep 300 & wait'], start_new_session=True
    )
    try:
        deadline = time.monotonic() + 10
        while len(load.group_members(process.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        members = load.group_members(process.pid)
        assert len(members) == 3 and process.pid in members
        assert load.group_rss_bytes(process.pid) > 0
    finally:
        load.stop_group(process, grace=0.5)
    assert process.returncode == -9  # SIGTERM was ignored, SIGKILL ended it
    assert load.group_members(process.pid) == []
    assert not any(alive(pid) for pid in members)


def test_streamlit_options_must_name_a_setting_and_a_value(load, tmp_path):
    for bad in ("runner.postScriptGC", "=false", " =1"):
        with pytest.raises(ValueError, match="section.name=value"):
            with load.serve(models_dir=tmp_path, options=[bad], log_path=tmp_path / "server.log"):
                pass
    assert not (tmp_path / "server.log").exists()  # refused before anything started


# --- against a real server ------------------------------------------------------------------------------
FAILING_APP = """
import time
import streamlit as st

st.markdown("**Your profile** · 0 movies rated")
if st.button("Break"):
    raise RuntimeError("boom")
if st.button("Complain"):
    st.error("That did not work")
if st.button("Dawdle"):
    time.sleep(3)
st.segmented_control("Pick", ["a", "b"], key="pick")
"""


def test_page_exceptions_error_boxes_and_timeouts_are_seen(load, tmp_path):
    app = tmp_path / "failing_app.py"
    app.write_text(textwrap.dedent(FAILING_APP))

    async def scenario(url: str) -> None:
        async with load.AppSession(url, timeout=20) as session:
            run = await session.open()
            assert run.problems == []
            assert run.profile_count() == 0
            assert run.widget("button_group", key="pick") is not None

            broken = await session.click(run.widget("button", label="Break"))
            # Streamlit redacts the message unless client.showErrorDetails allows it; the element is there.
            assert len(broken.problems) == 1 and broken.problems[0].startswith("exception")
            complained = await session.click(run.widget("button", label="Complain"))
            assert complained.problems == ["error box: That did not work"]
            picked = await session.choose(run.widget("button_group", key="pick"), "b")
            assert picked.problems == []  # a button's trigger is sent once: the next run is clean

            session.timeout = 0.5
            with pytest.raises(load.SessionError, match="no script_finished within"):
                await session.click(run.widget("button", label="Dawdle"))

    with load.serve(models_dir=tmp_path / "models", app=app, log_path=tmp_path / "server.log") as server:
        pgid = server.process.pid
        asyncio.run(scenario(server.url))
    assert load.group_members(pgid) == []


def test_reduced_load_run_has_no_errors_and_leaves_no_server(tmp_path):
    """3 sessions for 10 s on synthetic data with a tiny model, through the script's command line."""
    command = [
        sys.executable, str(SCRIPT), "--sessions", "3", "--seconds", "10", "--dataset", "synthetic",
        "--hyper", json.dumps(QUICK), "--think-ms", "300", "--request-timeout", "60",
        "--models-dir", str(tmp_path / "models"),
    ]
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run(command, capture_output=True, text=True, timeout=200, env=env)
    assert done.returncode in (0, 1), done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    summary = parse(last)
    assert summary["sessions"] == 3
    assert summary["errors"] == 0, done.stderr[-3000:]
    assert summary["requests"] >= 3  # every session opened the app...
    assert re.search(r"^\s+rate\s+n=[1-9]", done.stderr, re.MULTILINE), done.stderr[-3000:]  # ...and rated movies
    assert 0 < summary["p50_ms"] <= summary["p95_ms"]
    assert summary["peak_rss_mb"] > 100  # a Python process with torch and Streamlit loaded
    assert done.returncode == (0 if summary["p95_ms"] < 1000 else 1)
    server_pid = int(re.search(r"\(pid (\d+)\)", done.stderr).group(1))
    assert not alive(server_pid)
    saved = [path.name for path in (tmp_path / "models").iterdir() if not path.name.startswith(".")]
    assert len(saved) == 1 and "__mf__" in saved[0]  # the warm-up trained the app's model, once


def parse(line: str) -> dict[str, int]:
    match = re.fullmatch(
        r"sessions=(\d+) requests=(\d+) errors=(\d+) p50_ms=(\d+) p95_ms=(\d+) peak_rss_mb=(\d+)", line.strip()
    )
    assert match, f"not a summary line: {line!r}"
    names = ("sessions", "requests", "errors", "p50_ms", "p95_ms", "peak_rss_mb")
    return dict(zip(names, map(int, match.groups()), strict=True))
