"""The "Your profiles" and "Your data" pages in headless Chromium: save a profile, see it listed
with its shareable link, upload a ratings file and see the guessed columns. Screenshots land in
test-output/screenshots/ (git-ignored).

Reuses test_browser's helpers (the server via benchmarks/load.py's `serve`, settle, screenshot);
the server here is its own, on the synthetic dataset with a quick model, and with its profiles
database and uploads in a temporary folder. Skipped when Chromium or Playwright is missing.
"""

from __future__ import annotations

import pytest
from test_browser import (  # noqa: F401 - the browser and load fixtures
    QUICK,
    VIEWPORT,
    WAIT_MS,
    assert_no_exception,
    browser,
    expect,
    go_to,
    load,
    screenshot,
    settle,
)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]

RATINGS = "user,item,rating,timestamp\n" + "".join(f"u{u},m{m},{(u + 2 * m) % 5 + 1},{1_600_000_000 + u * 50 + m}\n" for u in range(20) for m in range(12) if (u * m) % 4)


@pytest.fixture(scope="module")
def server(tmp_path_factory, load):
    """The app on a free port with everything it writes under a temporary folder; always stopped."""
    home = tmp_path_factory.mktemp("browser-profiles")
    folders = {"XDG_CACHE_HOME": str(home / "cache"), "XDG_DATA_HOME": str(home / "data")}  # profiles database and uploads
    with load.serve(
        models_dir=home / "models",
        dataset="synthetic",
        hyper=QUICK,
        log_path=home / "streamlit.log",
        extra_env={**folders, "RECENGINE_PROFILES_DB": None, "RECENGINE_UPLOADS_DIR": None},
    ) as running:
        yield running.url, home


def test_save_a_profile_share_it_and_upload_a_ratings_file(server, browser, tmp_path):
    url, home = server
    page = browser.new_page(viewport=VIEWPORT)
    page.set_default_timeout(WAIT_MS)
    page.goto(url)
    page.get_by_text("Have you seen these?").wait_for()
    settle(page)
    cards = page.get_by_test_id("stButtonGroup")
    for position, stars in enumerate(["5", "3"]):
        cards.nth(position).get_by_role("radio", name=stars, exact=True).click()
        page.get_by_text(f"{position + 1} rated;", exact=False).first.wait_for()
        settle(page, 0.5)
    sidebar = page.get_by_test_id("stSidebarUserContent")
    expect(sidebar.get_by_text("Not saved — save it on Your profiles")).to_be_visible()

    go_to(page, "Your profiles")
    assert_no_exception(page)
    page.get_by_placeholder("e.g. Alice").fill("Alice")
    page.get_by_role("button", name="Save", exact=True).click()
    sidebar.get_by_text("Saved as", exact=False).wait_for()
    settle(page)
    assert_no_exception(page)
    expect(sidebar.get_by_text("2 rated", exact=False).last).to_be_visible()
    page.get_by_role("tab", name="Share").click()
    settle(page, 0.5)
    link = page.get_by_test_id("stCode").first.inner_text()
    assert link.startswith(f"{url}/recommendations?dataset=synthetic&r=") and "name=Alice" in link
    assert (home / "data" / "recengine" / "profiles.sqlite3").is_file()
    screenshot(page, "6-your-profiles")

    # The link opens a new session with the same two ratings, unsaved.
    other = browser.new_page(viewport=VIEWPORT)
    other.set_default_timeout(WAIT_MS)
    other.goto(link)
    other.locator("h1").get_by_text("Recommendations").wait_for()
    settle(other)
    expect(other.get_by_test_id("stSidebarUserContent").get_by_text("2 movies rated", exact=False)).to_be_visible()
    other.close()

    go_to(page, "Your data")
    assert_no_exception(page)
    ratings = tmp_path / "my ratings.csv"
    ratings.write_text(RATINGS)
    page.locator('[data-testid="stFileUploader"] input[type="file"]').first.set_input_files(str(ratings))
    page.get_by_text("Preview", exact=True).wait_for()
    settle(page)
    assert_no_exception(page)
    expect(page.get_by_text("scale 1-5 (inferred)", exact=False)).to_be_visible()
    screenshot(page, "7-your-data")
    page.get_by_role("button", name="Import").click()
    page.get_by_text("it is in the sidebar's Dataset list now", exact=False).wait_for()
    settle(page)
    assert_no_exception(page)
    assert (home / "data" / "recengine" / "uploads" / "my-ratings" / "manifest.json").is_file()
    screenshot(page, "7b-your-data-imported")
    page.close()
