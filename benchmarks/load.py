"""Many users at once: drive the real app with concurrent sessions and measure each request.

Starts `streamlit run app.py` on a free localhost port (its models in a temporary folder unless
`--models-dir` is given; the file watcher off, so edits to the app during a run change
nothing), waits for `/_stcore/health`, and warms up with one session that rates three movies
and opens the Recommendations page, so the app's model is trained (or loaded) and its caches
filled before anything is timed. Then `--sessions` sessions run at once for `--seconds`, each
a person who

* rates the movies of the onboarding batch one by one on *Rate movies* (a random rating of
  the dataset's scale; "Next batch" when the batch is done),
* every few ratings opens *Recommendations*, changes a filter ("How many", "Novelty") and goes
  back to *Rate movies*,
* after a dozen ratings presses "Reset profile" in the sidebar and onboards again,

pausing a random think time (`--think-ms`, uniform over 0.5x..1.5x) between requests.

No browser is involved: each session speaks Streamlit's own websocket protocol
(`/_stcore/stream`, the `websockets` client Streamlit installs). A request is one script
rerun: a `BackMsg.rerun_script` carrying the session's widget states (the ids learnt from
the `ForwardMsg` deltas, as the browser does) or a page's script hash; its latency runs from
sending the message until the `script_finished` message of that run arrives.

Errors, each counted once per request:

* a page exception (`Element.exception`) or an error box (`st.error`: the app's error boundary
  turns exceptions into those, so they are page exceptions too), a compile error, a page not
  found;
* a request that gets no `script_finished` within `--request-timeout`, a dropped connection;
* a page that contradicts the session's own state: the sidebar's "N movies rated" differs from
  the number this session rated (another session's ratings leaking in would show here), or
  the batch widgets to rate are missing.

The server's process group is sampled every 0.2 s for its total resident memory, and is
always stopped at the end (SIGTERM, then SIGKILL). Progress and details go to stderr (warm-up
time, the server's CPU time per request, latency per kind of request, every error); the last
line on stdout is

    sessions=N requests=N errors=N p50_ms=N p95_ms=N peak_rss_mb=N

Targets on 2 CPU cores: errors=0 and p95 under 1000 ms; the exit status is 1 when missed.
`--option section.name=value` passes a Streamlit setting to the server, to measure one.

Measured on the shared 2-core machine while other work kept its load average at 8-12 (so the
server got about half a core): 20 sessions for 60 s on ml-100k, think time 1000 ms, errors=0
in every run, but p50 6.4 s / p95 13.7 s (152 requests, 272 ms of server CPU per request,
peak RSS 642 MB). About 230 ms of those 272 are Streamlit's `runner.postScriptGC`: a full
`gc.collect()` after every script run, over the ~250,000 objects that streamlit, torch,
pandas and plotly allocate at import, holding the GIL. With `--option runner.postScriptGC=false`:
744 requests, 38 ms of server CPU per request, p50 461 ms, p95 1617 ms, peak RSS 686 MB.

    RECENGINE_DATA_DIR=/path/to/datasets python benchmarks/load.py --sessions 20 --seconds 60 [--dataset ml-100k] [--port 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Awaitable, Iterator, Mapping, Sequence

import numpy as np
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.Element_pb2 import Element
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "app.py"
TARGET_P95_MS = 1000.0
FINISHED_EARLY_FOR_RERUN = ForwardMsg.ScriptFinishedStatus.Value("FINISHED_EARLY_FOR_RERUN")
FINISHED_WITH_COMPILE_ERROR = ForwardMsg.ScriptFinishedStatus.Value("FINISHED_WITH_COMPILE_ERROR")
ALERT_ERROR = 1  # Alert.Format.ERROR
PROFILE_COUNT = re.compile(r"\*\*Your profile\*\* · (\d+) movies? rated")
#: Ratings before a session presses "Reset profile" and onboards again.
RATINGS_PER_ROUND = 12
#: Ratings between two visits of the Recommendations page.
RATINGS_PER_VISIT = 3

#: Runs `streamlit run` after sending the `recengine` loggers' INFO lines (e.g. the store's
#: "training <model> on <dataset>") to stderr, so the server log tells how often it trained.
LAUNCHER = """
import logging, sys
handler = logging.StreamHandler()
handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
logging.getLogger("recengine").addHandler(handler)
logging.getLogger("recengine").setLevel(logging.INFO)
{prelude}
from streamlit.web.cli import main
sys.argv = ["streamlit", *sys.argv[1:]]
main()
"""


# --- the protocol client --------------------------------------------------------------------------
class SessionError(Exception):
    """A request that did not complete: no connection, a timeout, a dropped connection, an unknown page."""


@dataclass
class Run:
    """What one script run drew, as the browser would hold it after `script_finished`.

    elements: the last element sent at each delta path (a tuple of ints), in arrival order.
    labels: the last label of each expander or status block (e.g. st.status's "Trained …").
    latency_ms: from sending the request until its `script_finished`.
    problems: page exceptions, error boxes, a compile error or a page not found, one line each.
    """

    elements: dict[tuple[int, ...], Element]
    latency_ms: float
    problems: list[str]
    page_hash: str
    labels: list[str] = field(default_factory=list)

    def widgets(self, kind: str) -> list[Element]:
        """Elements of one widget kind ("button", "button_group", "slider", ...), in page order."""
        return [element for element in self.elements.values() if element.WhichOneof("type") == kind]

    def widget(self, kind: str, *, key: str | None = None, label: str | None = None) -> Element | None:
        """The widget of `kind` whose user key is `key` (its id ends with "-<key>") or whose label is `label`."""
        for element in self.widgets(kind):
            proto = getattr(element, kind)
            if key is not None and proto.id.endswith(f"-{key}"):
                return element
            if label is not None and proto.label == label:
                return element
        return None

    def texts(self) -> list[str]:
        """Markdown bodies, headings, alert bodies and expander labels, in page order."""
        out = []
        for element in self.elements.values():
            kind = element.WhichOneof("type")
            if kind in ("markdown", "alert"):
                out.append(getattr(element, kind).body)
            elif kind == "heading":
                out.append(element.heading.body)
        return out

    def profile_count(self) -> int | None:
        """The sidebar's "N movies rated", None when the sidebar does not show it."""
        for text in self.texts():
            match = PROFILE_COUNT.search(text)
            if match:
                return int(match.group(1))
        return None


class AppSession:
    """One browser tab's session on a running app, spoken over Streamlit's websocket protocol.

    Keeps the widget states the way the browser does: every widget of the last run keeps its
    value (the ones this client set, and the ones the app set through session state), values
    of widgets gone from the page are dropped, and a button press is a one-shot trigger.
    """

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.pages: dict[str, str] = {}  # page title -> script hash, from the navigation message
        self.page_hash = ""
        self._states: dict[str, WidgetState] = {}
        self._socket: ClientConnection | None = None

    async def open(self, query_string: str = "") -> Run:
        """Connect and run the app once (the default page), as a fresh browser tab does."""
        stream = self.url.replace("http://", "ws://", 1) + "/_stcore/stream"
        try:
            self._socket = await asyncio.wait_for(
                connect(stream, subprotocols=["streamlit"], max_size=None, open_timeout=None, ping_interval=None),
                self.timeout,
            )
        except (OSError, WebSocketException, asyncio.TimeoutError) as error:
            raise SessionError(f"could not connect to {stream}: {type(error).__name__}: {error}") from None
        return await self._request(query_string=query_string)

    async def close(self) -> None:
        if self._socket is not None:
            await self._socket.close()
            self._socket = None

    async def __aenter__(self) -> "AppSession":
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def go_to(self, title: str) -> Run:
        """Open the page titled `title` (as clicking it in the sidebar does)."""
        if title not in self.pages:
            raise SessionError(f"no page titled {title!r}; the app has {sorted(self.pages)}")
        return await self._request(page_hash=self.pages[title])

    async def click(self, button: Element) -> Run:
        """Press a button (its trigger is sent once)."""
        state = WidgetState(id=button.button.id, trigger_value=True)
        return await self._request(changes=[state], persist=False)

    async def choose(self, button_group: Element, option: str) -> Run:
        """Pick `option` (its label as shown) in a segmented control / pills widget."""
        state = WidgetState(id=button_group.button_group.id)
        state.string_array_value.data.append(option)
        return await self._request(changes=[state])

    async def set_number(self, number_input: Element, value: float) -> Run:
        """Type `value` into a number input (int or float, as the widget's data type says)."""
        proto = number_input.number_input
        state = WidgetState(id=proto.id)
        if proto.data_type == type(proto).DataType.Value("INT"):
            state.int_value = int(value)
        else:
            state.double_value = float(value)
        return await self._request(changes=[state])

    async def slide(self, slider: Element, values: Sequence[float]) -> Run:
        """Move a slider to `values` (one value, or two for a range)."""
        state = WidgetState(id=slider.slider.id)
        state.double_array_value.data.extend(float(value) for value in values)
        return await self._request(changes=[state])

    async def rerun(self) -> Run:
        """Run the current page again with the same widget states."""
        return await self._request()

    async def _request(
        self,
        *,
        changes: Sequence[WidgetState] = (),
        persist: bool = True,
        page_hash: str | None = None,
        query_string: str = "",
    ) -> Run:
        if self._socket is None:
            raise SessionError("the session is not open")
        if persist:
            for state in changes:
                self._states[state.id] = state
        message = BackMsg()
        rerun = message.rerun_script
        rerun.query_string = query_string
        rerun.page_script_hash = self.page_hash if page_hash is None else page_hash
        sent = {state.id: state for state in self._states.values()} | {state.id: state for state in changes}
        rerun.widget_states.widgets.extend(sent.values())
        started = time.perf_counter()
        try:
            await self._socket.send(message.SerializeToString())
            run = await asyncio.wait_for(self._receive_run(), self.timeout)
        except asyncio.TimeoutError:
            raise SessionError(f"no script_finished within {self.timeout:.0f} s") from None
        except (OSError, WebSocketException) as error:
            raise SessionError(f"connection lost: {type(error).__name__}: {error}") from None
        run.latency_ms = (time.perf_counter() - started) * 1000.0
        self._keep_states_of(run)
        return run

    async def _receive_run(self) -> Run:
        """Read ForwardMsgs until a run finishes (a run cut short by `st.rerun` is followed by the next)."""
        assert self._socket is not None
        elements: dict[tuple[int, ...], Element] = {}
        labels: dict[tuple[int, ...], str] = {}
        problems: list[str] = []
        while True:
            message = ForwardMsg()
            message.ParseFromString(await self._socket.recv())
            kind = message.WhichOneof("type")
            if kind == "new_session":
                elements = {}
                labels = {}
                problems = []
                self.page_hash = message.new_session.page_script_hash
            elif kind == "navigation":
                self.pages = {page.page_name: page.page_script_hash for page in message.navigation.app_pages}
                self.page_hash = message.navigation.page_script_hash or self.page_hash
            elif kind == "delta" and message.delta.WhichOneof("type") == "new_element":
                element = message.delta.new_element
                elements[tuple(message.metadata.delta_path)] = element
                problem = describe_problem(element)
                if problem:
                    problems.append(problem)
            elif kind == "delta" and message.delta.WhichOneof("type") == "add_block":
                block = message.delta.add_block
                if block.WhichOneof("type") == "expandable":
                    labels[tuple(message.metadata.delta_path)] = block.expandable.label
            elif kind == "page_not_found":
                problems.append(f"page not found: {message.page_not_found.page_name!r}")
            elif kind == "script_finished":
                if message.script_finished == FINISHED_EARLY_FOR_RERUN:
                    continue
                if message.script_finished == FINISHED_WITH_COMPILE_ERROR:
                    problems.append("the script did not compile")
                return Run(elements, 0.0, problems, self.page_hash, list(labels.values()))

    def _keep_states_of(self, run: Run) -> None:
        """After a run, as the browser: drop the values of widgets no longer on the page and take
        the values the app set through session state."""
        present: set[str] = set()
        for element in run.elements.values():
            proto = getattr(element, element.WhichOneof("type") or "empty", None)
            widget_id = getattr(proto, "id", "")
            if not widget_id:
                continue
            present.add(widget_id)
            if element.WhichOneof("type") == "button_group" and proto.set_value:
                state = WidgetState(id=widget_id)
                state.string_array_value.data.extend(proto.raw_values)
                self._states[widget_id] = state
        self._states = {widget_id: state for widget_id, state in self._states.items() if widget_id in present}


def describe_problem(element: Element) -> str | None:
    """One line for an element that reports a failure (exception or error box), else None."""
    kind = element.WhichOneof("type")
    if kind == "exception" and not element.exception.is_warning:
        return f"exception {element.exception.type}: {element.exception.message[:200]}"
    if kind == "alert" and element.alert.format == ALERT_ERROR:
        return f"error box: {element.alert.body[:200]}"
    return None


# --- the server -----------------------------------------------------------------------------------------
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Server:
    """A running `streamlit run app.py` (its own process group) and where it logs."""

    process: subprocess.Popen
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def trainings(self) -> list[str]:
        """The store's "training <model> on <dataset> ..." log lines so far."""
        return [line for line in self.log().splitlines() if "recengine.store: training " in line]


@contextmanager
def serve(
    *,
    port: int = 0,
    models_dir: Path,
    app: Path = APP,
    dataset: str | None = None,
    hyper: dict | None = None,
    log_path: Path,
    prelude: str = "",
    options: Sequence[str] = (),
    extra_env: Mapping[str, str | None] | None = None,
    health_timeout: float = 90.0,
) -> Iterator[Server]:
    """Run `app` on `port` (0: a free one) until the block ends, then stop its whole process group.

    models_dir: the store's folder ($RECENGINE_MODELS_DIR). dataset: the one a new session
    starts on ($RECENGINE_DEFAULT_DATASET). hyper: the app's hyper-parameter overrides
    ($RECENGINE_APP_HYPER), e.g. {"mf": {"epochs": 2}}. prelude: Python run in the server
    process before Streamlit starts (tests use it to count calls). options: more Streamlit
    settings as "section.name=value" (e.g. "runner.postScriptGC=false"), after the app's own
    `.streamlit/config.toml`. extra_env: more environment variables for the server, None removing
    one (e.g. {"XDG_DATA_HOME": ..., "RECENGINE_PROFILES_DB": None}). The server's stdout and
    stderr go to `log_path`.
    """
    port = port or free_port()
    env = {**os.environ, "RECENGINE_MODELS_DIR": str(models_dir), "OMP_WAIT_POLICY": "PASSIVE"}
    env.setdefault("RECENGINE_DEVICE", "cpu")
    if dataset:
        env["RECENGINE_DEFAULT_DATASET"] = dataset
    if hyper is not None:
        env["RECENGINE_APP_HYPER"] = json.dumps(hyper)
    for name, value in (extra_env or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    command = [
        sys.executable, "-c", LAUNCHER.format(prelude=prelude), "run", str(app),
        "--server.headless", "true", "--server.port", str(port), "--server.address", "127.0.0.1",
        "--server.fileWatcherType", "none", "--server.runOnSave", "false",
        "--browser.gatherUsageStats", "false", "--global.showWarningOnDirectExecution", "false",
    ]
    for option in options:
        name, sep, value = option.partition("=")
        if not sep or not name.strip():
            raise ValueError(f'a Streamlit option must look like "section.name=value", got {option!r}')
        command += [f"--{name.strip()}", value.strip()]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(process, f"http://127.0.0.1:{port}", log_path)
    try:
        wait_healthy(server, health_timeout)
        yield server
    finally:
        stop_group(process)


def wait_healthy(server: Server, timeout: float) -> None:
    """Poll /_stcore/health until it answers "ok"; RuntimeError when the server dies, TimeoutError after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            tail = "\n".join(server.log().splitlines()[-20:])
            raise RuntimeError(f"streamlit exited with code {server.process.returncode} before it was healthy:\n{tail}")
        try:
            with urllib.request.urlopen(f"{server.url}/_stcore/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"streamlit did not answer {server.url}/_stcore/health within {timeout:.0f} s")


def stop_group(process: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process group `process` leads, SIGKILL it after `grace` seconds; reap the leader."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        if not group_members(process.pid):
            break
    if process.poll() is None:  # pragma: no cover - only when even SIGKILL did not end it
        process.wait(timeout=grace)


def _stat_fields(pid: str) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()  # fields after the command name (which may hold spaces)


def group_members(pgid: int) -> list[int]:
    """Live processes in process group `pgid` (zombies excluded), from /proc."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(entry)
            # fields[0] is the state, fields[2] the process group.
            if fields is not None and fields[0] != "Z" and int(fields[2]) == pgid:
                members.append(int(entry))
    return members


def group_rss_bytes(pgid: int) -> int:
    """Total resident memory of the live processes in process group `pgid`."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for pid in group_members(pgid):
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue
    return total


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU time used so far by the live processes in process group `pgid`."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in group_members(pgid):
        fields = _stat_fields(str(pid))
        if fields is not None:
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / ticks


class PeakRss:
    """Samples a process group's resident memory every `interval` seconds in a thread; `peak_bytes` is the largest."""

    def __init__(self, pgid: int, interval: float = 0.2) -> None:
        self.pgid = pgid
        self.interval = interval
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="peak-rss", daemon=True)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while True:
            self.peak_bytes = max(self.peak_bytes, group_rss_bytes(self.pgid))
            if self._stop.wait(self.interval):
                return


# --- one person using the app --------------------------------------------------------------------
@dataclass
class Tally:
    """Requests of all sessions: latencies of the completed ones, and every error with its session."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    requests: int = 0
    by_action: dict[str, list[float]] = field(default_factory=dict)

    def record(self, session: int, action: str, run: Run | None, error: str | None = None) -> None:
        self.requests += 1
        if run is not None:
            self.latencies_ms.append(run.latency_ms)
            self.by_action.setdefault(action, []).append(run.latency_ms)
            problems = run.problems + ([error] if error else [])
        else:
            problems = [error or "no answer"]
        if problems:
            self.errors.append(f"session {session} {action}: {'; '.join(problems)}")

    def problem(self, session: int, action: str, message: str) -> None:
        """An error found without a request (the page lacks what the next action needs)."""
        self.errors.append(f"session {session} {action}: {message}")


class Person:
    """A scripted user of one session: onboards, looks at recommendations, starts over.

    Every request is recorded in `tally`; the person also checks that the page agrees with what
    they did (their own number of ratings in the sidebar, a batch to rate). A session stops at
    its first request that fails or page that lacks what the next action needs (its state on
    the server is then unknown); the others go on.
    """

    def __init__(self, number: int, session: AppSession, tally: Tally, rng: random.Random, think_s: float) -> None:
        self.number = number
        self.session = session
        self.tally = tally
        self.rng = rng
        self.think_s = think_s
        self.rated: set[str] = set()  # widget ids of the batch controls this person has rated since the last reset
        self.ratings_since_visit = 0

    async def act(self, action: str, request: Awaitable[Run]) -> Run | None:
        """Send one request; a failed one is recorded and returns None (the session goes on when it can)."""
        try:
            run = await request
        except SessionError as error:
            self.tally.record(self.number, action, None, str(error))
            return None
        self.tally.record(self.number, action, run, self.check(run))
        return run

    def check(self, run: Run) -> str | None:
        count = run.profile_count()
        if count != len(self.rated):
            return f"the sidebar says {count} movies rated, this session rated {len(self.rated)}"
        return None

    async def think(self) -> None:
        if self.think_s > 0:
            await asyncio.sleep(self.think_s * self.rng.uniform(0.5, 1.5))

    async def live_until(self, deadline: float) -> None:
        """Act until `deadline` (time.monotonic()); the request in flight at the deadline completes."""
        run = await self.act("open", self.session.open())
        while run is not None and time.monotonic() < deadline:
            await self.think()
            run = await self.step(run)

    async def step(self, run: Run) -> Run | None:
        """One request chosen from what the page shows."""
        if len(self.rated) >= RATINGS_PER_ROUND:
            reset = run.widget("button", label="Reset profile")
            if reset is None:
                self.tally.problem(self.number, "reset", "no Reset profile button in the sidebar")
                return None
            self.rated.clear()
            self.ratings_since_visit = 0
            return await self.act("reset", self.session.click(reset))
        if self.ratings_since_visit >= RATINGS_PER_VISIT:
            self.ratings_since_visit = 0
            return await self.visit_recommendations()
        unrated = [
            element for element in run.widgets("button_group")
            if "-batch-" in element.button_group.id
            and element.button_group.id not in self.rated
            and not element.button_group.raw_values
        ]
        if unrated:
            group = self.rng.choice(unrated)
            option = self.rng.choice(group.button_group.options).content
            self.rated.add(group.button_group.id)
            self.ratings_since_visit += 1
            return await self.act("rate", self.session.choose(group, option))
        next_batch = run.widget("button", label="Next batch")
        if next_batch is None:
            self.tally.problem(self.number, "rate", "no movie left to rate and no Next batch button")
            return None
        return await self.act("next batch", self.session.click(next_batch))

    async def visit_recommendations(self) -> Run | None:
        """Open Recommendations, change one filter, go back to Rate movies."""
        run = await self.act("recommendations", self.session.go_to("Recommendations"))
        if run is None:
            return None
        await self.think()
        how_many = run.widget("number_input", label="How many")
        novelty = run.widget("slider", label="Novelty")
        if how_many is None or novelty is None:
            self.tally.problem(self.number, "recommendations", "the How many / Novelty filters are missing")
            return None
        if self.rng.random() < 0.5:
            run = await self.act("how many", self.session.set_number(how_many, self.rng.choice([10, 20, 30, 50])))
        else:
            run = await self.act("novelty", self.session.slide(novelty, [self.rng.choice([-0.25, 0.0, 0.1, 0.25, 0.5])]))
        if run is None:
            return None
        await self.think()
        return await self.act("rate movies", self.session.go_to("Rate movies"))


# --- the whole run ---------------------------------------------------------------------------------------
@dataclass
class Summary:
    sessions: int
    requests: int
    errors: int
    p50_ms: float
    p95_ms: float
    peak_rss_mb: float

    def line(self) -> str:
        return (
            f"sessions={self.sessions} requests={self.requests} errors={self.errors} "
            f"p50_ms={self.p50_ms:.0f} p95_ms={self.p95_ms:.0f} peak_rss_mb={self.peak_rss_mb:.0f}"
        )


SUMMARY = re.compile(
    r"^sessions=(?P<sessions>\d+) requests=(?P<requests>\d+) errors=(?P<errors>\d+) "
    r"p50_ms=(?P<p50_ms>\d+) p95_ms=(?P<p95_ms>\d+) peak_rss_mb=(?P<peak_rss_mb>\d+)$"
)


def parse_summary(line: str) -> dict[str, int]:
    """The numbers of a summary line; ValueError when the line does not have the summary's form."""
    match = SUMMARY.match(line.strip())
    if match is None:
        raise ValueError(f"not a load summary line (expected {SUMMARY.pattern!r}): {line!r}")
    return {name: int(value) for name, value in match.groupdict().items()}


async def warm_up(url: str, timeout: float) -> Run:
    """One session that rates three movies and opens Recommendations, so every model the timed
    sessions use is trained or loaded and every cache is filled. Raises SessionError when a
    page shows an error."""
    async with AppSession(url, timeout=timeout) as session:
        run = await session.open()
        for _ in range(3):
            if run.problems:
                break
            group = next((g for g in run.widgets("button_group") if "-batch-" in g.button_group.id and not g.button_group.raw_values), None)
            if group is None:
                raise SessionError("the Rate movies page shows no movie to rate")
            run = await session.choose(group, group.button_group.options[-1].content)
        if not run.problems:
            run = await session.go_to("Recommendations")
        if run.problems:
            raise SessionError("warm-up: " + "; ".join(run.problems))
        return run


async def drive(url: str, sessions: int, seconds: float, think_s: float, timeout: float, seed: int) -> Tally:
    """Run `sessions` people at once for `seconds`; each session's connection is closed at the end."""
    tally = Tally()
    deadline = time.monotonic() + seconds

    async def one(number: int) -> None:
        rng = random.Random(seed * 100_003 + number)
        await asyncio.sleep(rng.uniform(0, min(think_s, 1.0)))  # people do not all arrive in the same millisecond
        async with AppSession(url, timeout=timeout) as session:
            await Person(number, session, tally, rng, think_s).live_until(deadline)

    await asyncio.gather(*(one(number) for number in range(sessions)))
    return tally


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (numpy's linear interpolation); 0 for no values."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else 0.0


def run_load(
    *,
    sessions: int,
    seconds: float,
    dataset: str | None = None,
    port: int = 0,
    think_ms: float = 1000.0,
    request_timeout: float = 30.0,
    warmup_timeout: float = 900.0,
    models_dir: Path | None = None,
    hyper: dict | None = None,
    options: Sequence[str] = (),
    seed: int = 0,
    log: IO[str] = sys.stderr,
) -> Summary:
    """Start the app, warm it up, drive `sessions` sessions for `seconds`, stop the app; the figures."""
    with tempfile.TemporaryDirectory(prefix="recengine-load-") as home:
        home = Path(home)
        models = models_dir or home / "models"
        with serve(
            port=port, models_dir=models, dataset=dataset, hyper=hyper, options=options, log_path=home / "streamlit.log"
        ) as server:
            print(f"server {server.url} (pid {server.process.pid}), models in {models}", file=log)
            try:
                with PeakRss(server.process.pid) as rss:
                    started = time.perf_counter()
                    try:
                        asyncio.run(warm_up(server.url, warmup_timeout))
                    except SessionError as error:
                        raise SystemExit(f"warm-up failed: {error}\nserver log tail:\n{tail(server.log())}") from None
                    trained = len(server.trainings())
                    print(f"warm-up {time.perf_counter() - started:.1f} s ({trained} trainings)", file=log)
                    cpu_before, wall_before = group_cpu_seconds(server.process.pid), time.perf_counter()
                    client_before = time.process_time()
                    tally = asyncio.run(drive(server.url, sessions, seconds, think_ms / 1000.0, request_timeout, seed))
                    client = time.process_time() - client_before
                    cpu = group_cpu_seconds(server.process.pid) - cpu_before
                    wall = time.perf_counter() - wall_before
                    during = len(server.trainings()) - trained
                print(
                    f"server CPU {cpu:.1f} s in {wall:.1f} s ({cpu / wall:.2f} cores), "
                    f"{1000 * cpu / max(tally.requests, 1):.0f} ms per request; this client {client:.1f} s",
                    file=log,
                )
                for action, values in sorted(tally.by_action.items()):
                    print(
                        f"  {action:<16} n={len(values):<5} p50_ms={percentile(values, 50):.0f} p95_ms={percentile(values, 95):.0f}",
                        file=log,
                    )
                for error in tally.errors[:20]:
                    print(f"error: {error}", file=log)
                if len(tally.errors) > 20:
                    print(f"... and {len(tally.errors) - 20} more errors", file=log)
                if during:
                    print(f"warning: the server trained {during} models during the timed sessions", file=log)
                if "Traceback" in server.log():
                    print(f"the server log has a traceback:\n{tail(server.log())}", file=log)
            except Exception:
                print(f"server log tail:\n{tail(server.log())}", file=log)
                raise
    return Summary(
        sessions=sessions,
        requests=tally.requests,
        errors=len(tally.errors),
        p50_ms=percentile(tally.latencies_ms, 50),
        p95_ms=percentile(tally.latencies_ms, 95),
        peak_rss_mb=rss.peak_bytes / 2**20,
    )


def tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=20, help="concurrent sessions (default: 20)")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long they run, after the warm-up (default: 60)")
    parser.add_argument("--dataset", default=None, help="the dataset sessions start on (default: the app's, ml-100k)")
    parser.add_argument("--port", type=int, default=0, help="the server's port (default 0: a free one)")
    parser.add_argument("--think-ms", type=float, default=1000.0, help="mean pause between a person's requests (default: 1000)")
    parser.add_argument("--request-timeout", type=float, default=30.0, help="seconds a request may take before it counts as an error (default: 30)")
    parser.add_argument("--models-dir", type=Path, default=None, help="the store's folder (default: a new temporary one, so the warm-up trains)")
    parser.add_argument("--hyper", type=json.loads, default=None, help='the app\'s hyper-parameters as JSON, e.g. \'{"mf": {"epochs": 2}}\'')
    parser.add_argument(
        "--option", action="append", default=[], metavar="SECTION.NAME=VALUE",
        help="a Streamlit setting for the server, repeatable (e.g. runner.postScriptGC=false)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the people's choices (default: 0)")
    args = parser.parse_args(argv)
    for name in ("sessions", "seconds"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive, got {getattr(args, name)}")
    if not 0 <= args.port < 65536:
        parser.error(f"--port must be 0 (a free port) or 1..65535, got {args.port}")
    summary = run_load(
        sessions=args.sessions,
        seconds=args.seconds,
        dataset=args.dataset,
        port=args.port,
        think_ms=args.think_ms,
        request_timeout=args.request_timeout,
        models_dir=args.models_dir,
        hyper=args.hyper,
        options=args.option,
        seed=args.seed,
    )
    print(f"load: {os.getloadavg()[0]:.2f} (1-minute average, {os.cpu_count()} cores); think time {args.think_ms:.0f} ms", file=sys.stderr)
    print(summary.line(), flush=True)
    return 0 if summary.errors == 0 and summary.p95_ms < TARGET_P95_MS else 1


if __name__ == "__main__":
    sys.exit(main())
