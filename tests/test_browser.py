"""Click through the running app in headless Chromium and save a screenshot of every page.

Starts `streamlit run app.py` on a free port with its models in a temporary folder and a
quick MF configuration, drives it with Playwright (the system's /usr/bin/chromium; no browser
is ever downloaded), and always stops the server. Uses ml-100k when $RECENGINE_DATA_DIR has
it, else the synthetic dataset; $RECENGINE_BROWSER_DATASET picks another (say ml-latest-small).
Screenshots land in test-output/screenshots/ (git-ignored).
Skipped when Chromium or Playwright is missing.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
from conftest import import_script, real_data_dir

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[1]
LOAD_SCRIPT = REPO / "benchmarks" / "load.py"
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = REPO / "test-output" / "screenshots"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]
#: Tiny training settings for the synthetic fallback; on real data the app runs with its true
#: defaults, so the screenshots show what a newcomer sees, except that the watch-next model
#: trains for 2 epochs instead of 10 (its 10 default epochs on ml-100k took 145 s on one busy core).
QUICK = {"mf": {"epochs": 2, "embedding_dim": 16}, "seq-transformer": {"epochs": 1, "embedding_dim": 16}}
REAL = {"seq-transformer": {"epochs": 2}}
VIEWPORT = {"width": 1400, "height": 1800}
LONG_RUN_EPOCHS = 400
WAIT_MS = 120_000

if not CHROMIUM.exists():
    pytest.skip("Chromium is not installed at /usr/bin/chromium (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
expect = sync_api.expect
expect.set_options(timeout=30_000)


@pytest.fixture(scope="module")
def load():
    """benchmarks/load.py as a module: its `serve` starts and always stops the app."""
    with import_script(LOAD_SCRIPT, "load_benchmark_browser") as module:
        yield module


@pytest.fixture(scope="module")
def dataset() -> str:
    chosen = os.environ.get("RECENGINE_BROWSER_DATASET", "").strip()
    if chosen:
        return chosen
    folder = real_data_dir()
    return "ml-100k" if folder is not None and (folder / "ml-100k").is_dir() else "synthetic"


@pytest.fixture(scope="module")
def server(tmp_path_factory, dataset, load):
    """The app served on a free port; yields its URL and always stops the process."""
    home = tmp_path_factory.mktemp("browser-app")
    with load.serve(
        models_dir=home / "models",
        dataset=dataset,
        hyper=QUICK if dataset == "synthetic" else REAL,
        log_path=home / "streamlit.log",
        extra_env={"XDG_CACHE_HOME": str(home / "cache"), "XDG_DATA_HOME": str(home / "data")},
    ) as running:
        yield running.url


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def settle(page, seconds: float = 1.0) -> None:
    """Let the current script run finish drawing (the 'running' indicator goes away)."""
    time.sleep(0.3)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
        " || !document.querySelector('[data-testid=\"stStatusWidget\"]').innerText.match(/Running|Stop/)",
        timeout=WAIT_MS,
    )
    time.sleep(seconds)


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def assert_no_exception(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0
    assert "Traceback" not in page.locator('[data-testid="stMain"]').inner_text()


def choose(page, selectbox, option: str) -> None:
    """Pick `option` in a Streamlit select box (type to filter its list, then Enter) and wait for the rerun."""
    selectbox.click()
    page.keyboard.type(option)
    page.keyboard.press("Enter")
    settle(page)
    assert_no_exception(page)


def scroll_to(page, heading: str) -> None:
    """Scroll the page's main area so that `heading` is at the top (screenshots show the viewport)."""
    page.get_by_text(heading, exact=True).evaluate("element => element.scrollIntoView({block: 'start'})")
    time.sleep(0.5)


def go_to(page, title: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_text(title, exact=True).click()
    page.locator("h1").get_by_text(title).wait_for(timeout=WAIT_MS)
    settle(page)


def test_click_through_every_page(server, browser, dataset):
    page = browser.new_page(viewport=VIEWPORT)
    page.set_default_timeout(WAIT_MS)
    # The very first request to the fresh server is a link straight to a page: it still runs
    # inside the frame (sidebar with the pickers), not as a bare script.
    page.goto(f"{server}/because_you_watched")
    page.locator("h1").get_by_text("Because you watched").wait_for()
    expect(page.get_by_test_id("stSidebarUserContent").get_by_text("Dataset", exact=True)).to_be_visible()
    page.goto(server)

    # Rate movies: the first start trains the quick model, then the first batch appears.
    page.get_by_text("Have you seen these?").wait_for()
    settle(page)
    assert_no_exception(page)
    expect(page.get_by_text("Rate a movie and your first recommendations appear here.")).to_be_visible()
    cards = page.get_by_test_id("stButtonGroup")
    expect(cards).to_have_count(6)
    for position, stars in enumerate(["5", "4", "2"]):
        cards.nth(position).get_by_role("radio", name=stars, exact=True).click()
        page.get_by_text(re.compile(rf"^{position + 1} rated;")).wait_for()
        settle(page, 0.5)
    expect(page.locator('[data-testid="stMarkdownContainer"] ol li')).to_have_count(8)
    expect(page.get_by_test_id("stSidebarUserContent").get_by_text("3 movies rated")).to_be_visible()
    expect(cards.nth(0).get_by_role("radio", name="5", exact=True)).to_have_attribute("aria-checked", "true")
    screenshot(page, "1-rate-movies")

    go_to(page, "Recommendations")
    assert_no_exception(page)
    page.get_by_test_id("stDataFrame").first.wait_for()
    expect(page.get_by_text("Your profile is still thin: 3 of about 10 ratings")).to_be_visible()
    expect(page.get_by_text("Hide movies you passed over")).to_be_visible()
    screenshot(page, "2-recommendations")

    # Watch next: the next-item model trains on first use (with progress), then lists what follows.
    page.get_by_role("tab", name="Watch next").click()
    page.get_by_text("Your movies in the order you rated them:").wait_for()
    settle(page)
    assert_no_exception(page)
    expect(page.get_by_text(re.compile(r"^Trained seq-transformer on .+ in [\d.]+ s$"))).to_be_visible()
    history = page.locator("p", has_text="Your movies in the order you rated them:").inner_text()
    assert history.count("→") == 2 and history.rstrip().endswith("(latest)")  # the three movies rated above
    expect(page.get_by_test_id("stDataFrame")).to_have_count(1)
    expect(page.get_by_text(re.compile(r"seq-transformer reads your latest movies as a sequence"))).to_be_visible()
    screenshot(page, "2b-watch-next")

    go_to(page, "Because you watched")
    query = "forest gump" if dataset != "synthetic" else "Synthetic Movie 41"
    page.get_by_label("A movie you liked").fill(query)
    page.keyboard.press("Enter")
    page.get_by_text(re.compile(r"^Because you watched .+\(\d{4}\)$")).wait_for()
    settle(page)
    assert_no_exception(page)
    if dataset != "synthetic":
        expect(page.get_by_text("Because you watched Forrest Gump (1994)")).to_be_visible()
    expect(page.locator(".js-plotly-plot")).to_have_count(1)
    screenshot(page, "3-because-you-watched")

    go_to(page, "Latent map")
    page.locator(".js-plotly-plot").first.wait_for()
    settle(page, 2.0)
    assert_no_exception(page)
    expect(page.get_by_text("you are here").first).to_be_visible()
    screenshot(page, "4-latent-map")
    # Click the first movie of the first trace: its neighbours and a rating box appear.
    x, y = page.evaluate(
        """() => {
            const chart = document.querySelector('.js-plotly-plot');
            const box = chart.getBoundingClientRect();
            const xaxis = chart._fullLayout.xaxis, yaxis = chart._fullLayout.yaxis, trace = chart._fullData[0];
            return [box.left + xaxis._offset + xaxis.l2p(trace.x[0]), box.top + yaxis._offset + yaxis.l2p(trace.y[0])];
        }"""
    )
    page.mouse.click(x, y)
    page.get_by_text("Nearest in taste space").wait_for()
    settle(page)
    assert_no_exception(page)
    screenshot(page, "4b-latent-map-selected")

    go_to(page, "Training monitor")
    assert_no_exception(page)
    epochs = page.get_by_label("epochs", exact=True)
    # A long run: watch it live, then stop it.
    # (Long enough to be still running when Stop is clicked: 40 epochs of the quick synthetic
    # model take 3 s on an idle machine.)
    epochs.fill(str(LONG_RUN_EPOCHS))  # inside the form: sent with the Train button
    page.get_by_role("button", name="Train", exact=True).click()
    page.get_by_text(re.compile(rf"^Epoch \d+/{LONG_RUN_EPOCHS}")).wait_for()
    settle(page, 0.2)
    expect(page.get_by_role("button", name="Stop", exact=True)).to_be_visible()
    screenshot(page, "5a-training-monitor-live")
    page.get_by_role("button", name="Stop", exact=True).click()
    page.get_by_text(re.compile(r"^Stopped after \d+ epochs; nothing was saved")).wait_for()
    # A short run to the end: curves, test metrics and the table of runs.
    epochs.fill("3")
    page.get_by_role("button", name="Train", exact=True).click()
    page.get_by_text(re.compile(r"^Done in [\d.]+ s")).wait_for()
    settle(page, 2.0)
    assert_no_exception(page)
    expect(page.get_by_text("3 / 3")).to_be_visible()
    expect(page.get_by_text("Test rmse")).to_be_visible()
    screenshot(page, "5-training-monitor")

    # The model comparison: every saved model of this dataset and split (the app's mf and the
    # 3-epoch run; the watch-next model is on the "last" split), then queue every model.
    train_all = page.get_by_role("button", name=re.compile(rf"^Train every model with defaults on {dataset} · random"))
    expect(train_all).to_be_visible()
    assert page.locator(".js-plotly-plot").count() >= 2  # the run's curves and the comparison's bars
    choose(page, page.get_by_label("Split", exact=True).last, "All splits")
    expect(page.get_by_role("button", name="Train every model with defaults", exact=True)).to_be_disabled()
    scroll_to(page, "Compare models")
    screenshot(page, "5b-model-comparison")
    choose(page, page.get_by_label("Split", exact=True).last, "random")
    page.get_by_role("button", name=re.compile(r"^Train every model with defaults on")).click()
    page.get_by_text(re.compile(r"^\d+ of \d+ done")).wait_for()
    settle(page, 0.5)
    assert_no_exception(page)
    scroll_to(page, "Compare models")
    screenshot(page, "5c-train-every-model")
    page.close()
