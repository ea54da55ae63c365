"""The scale benchmark's pure helpers, a tiny end-to-end run of it, and the generator's pseudo-titles."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recengine.data.dataset import parse_title
from recengine.data.synthetic import TITLE_STYLES, generate_synthetic, pseudo_titles

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "scale.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("scale_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


scale = _load_script()


# --- growth exponent and extrapolation --------------------------------------------------------
@pytest.mark.parametrize("power", [0.5, 1.0, 1.5, 2.0])
def test_growth_exponent_recovers_the_power_of_a_power_law(power):
    sizes = [1e5, 1e6, 1e7, 2.5e7]
    seconds = [3e-6 * n**power for n in sizes]
    assert scale.growth_exponent(sizes, seconds) == pytest.approx(power, abs=1e-9)


def test_growth_exponent_is_the_least_squares_slope_of_noisy_points():
    # log10 sizes 5, 6, 7 with log10 times 0, 1.2, 1.8: slope = cov / var = 0.9 (by hand)
    sizes, seconds = [1e5, 1e6, 1e7], [1.0, 10**1.2, 10**1.8]
    assert scale.growth_exponent(sizes, seconds) == pytest.approx(0.9, abs=1e-9)


def test_growth_exponent_ignores_missing_times_and_needs_two_sizes():
    assert scale.growth_exponent([1e5, 1e6, 1e7], [1.0, None, 100.0]) == pytest.approx(1.0)
    assert scale.growth_exponent([1e5, 1e6], [1.0, 0.0]) != scale.growth_exponent([1e5, 1e6], [1.0, 0.0])  # NaN
    assert math.isnan(scale.growth_exponent([1e6], [2.0]))
    assert math.isnan(scale.growth_exponent([1e6, 1e6], [2.0, 3.0]))


def test_predict_seconds_extrapolates_along_the_slope_but_never_below_linear():
    assert scale.predict_seconds([1e5, 1e6], [1.0, 100.0], 1e7) == pytest.approx(10_000.0)  # slope 2
    assert scale.predict_seconds([1e5, 1e6], [1.0, 2.0], 1e7) == pytest.approx(20.0)  # slope 0.3 -> 1
    assert scale.predict_seconds([1e6], [4.0], 1e7) == pytest.approx(40.0)  # one point: linear
    assert math.isnan(scale.predict_seconds([], [], 1e7))


# --- sizes and shapes -------------------------------------------------------------------------
def test_sizes_up_to_takes_the_standard_sizes_below_the_limit_and_the_limit():
    assert scale.sizes_up_to(10_000_000) == [100_000, 1_000_000, 10_000_000]
    assert scale.sizes_up_to(25_000_000) == [100_000, 1_000_000, 10_000_000, 25_000_000]
    assert scale.sizes_up_to(3_000_000) == [100_000, 1_000_000, 3_000_000]
    assert scale.sizes_up_to(20_000) == [2_000, 20_000]  # a second size so the exponent exists
    assert scale.sizes_up_to(100_000) == [10_000, 100_000]
    with pytest.raises(ValueError, match="max_interactions must be an integer >= 1000, got 10"):
        scale.sizes_up_to(10)


def test_shape_for_matches_the_movielens_releases_and_grows_with_the_data():
    for interactions, users, items in scale.MOVIELENS_SHAPES:
        assert scale.shape_for(interactions) == (users, items)
    shapes = [scale.shape_for(n) for n in (2_000, 20_000, 300_000, 3_000_000, 50_000_000)]
    assert all(a[0] < b[0] and a[1] < b[1] for a, b in zip(shapes, shapes[1:]))
    for n in (50, 2_000, 20_000):  # feasible for the generator: >= 5 ratings per user, density <= 25%
        users, items = scale.shape_for(n)
        assert n / users >= 5 - 1e-9 and users * items >= 4 * n


# --- table ------------------------------------------------------------------------------------
def test_format_table_aligns_columns_and_leaves_skipped_figures_blank():
    done = scale.Measurement("mf", 1_000_000, 6_040, 3_706, device="CPU", batch_size=1024, epoch_seconds=4.0,
                             epoch_cpu_seconds=3.5, fit_seconds=5.25, peak_rss_mb=812.4, data_rss_mb=400.0, eval_seconds=0.5, ndcg=0.01234,
                             train_interactions=990_000)
    skipped = scale.Measurement("neural", 10_000_000, 69_878, 10_677, note="skipped: 'neural' is not a registered model")
    lines = scale.format_table([done, skipped]).splitlines()
    assert len(lines) == 4
    assert lines[0].split() [:3] == ["model", "interactions", "users"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2].split() == ["mf", "1,000,000", "6,040", "3,706", "CPU", "1024", "4.00", "3.50", "248k", "5.2", "812",
                                "400", "0.50", "0.0123"]
    assert lines[3].split()[:4] == ["neural", "10,000,000", "69,878", "10,677"]
    assert lines[3].endswith("skipped: 'neural' is not a registered model")
    assert lines[3].index("skipped") == lines[0].index("note")  # columns line up
    assert done.ratings_per_second == pytest.approx(247_500.0) and skipped.ratings_per_second is None


def test_growth_lines_give_one_line_per_model_in_order():
    rows = [scale.Measurement("als", n, 1, 1, epoch_seconds=t) for n, t in ((1e5, 0.1), (1e6, 1.0))]
    rows += [scale.Measurement("mf", 1e5, 1, 1, epoch_seconds=1.0), scale.Measurement("mf", 1e6, 1, 1, note="skipped")]
    assert scale.growth_lines(rows) == ["model=als growth_exponent=1.00", "model=mf growth_exponent=nan"]


def test_growth_lines_fit_cpu_seconds_when_every_row_has_them():
    # wall times inflated 8x by other jobs at the larger size; the CPU seconds grow linearly
    rows = [scale.Measurement("mf", 1e5, 1, 1, epoch_seconds=1.0, epoch_cpu_seconds=1.0),
            scale.Measurement("mf", 1e6, 1, 1, epoch_seconds=80.0, epoch_cpu_seconds=10.0)]
    assert scale.growth_lines(rows) == ["model=mf growth_exponent=1.00"]
    rows[0] = dataclasses.replace(rows[0], epoch_cpu_seconds=None)  # then the wall times are used
    assert scale.growth_lines(rows) == [f"model=mf growth_exponent={math.log10(80):.2f}"]


# --- end to end ---------------------------------------------------------------------------------
def test_tiny_run_prints_a_table_and_the_growth_lines_last():
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--max-interactions", "20000", "--models", "als,not-a-model", "--device", "cpu",
         "--threads", "1"],
        capture_output=True, text=True, timeout=180, env=environment, cwd=ROOT,
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.strip().splitlines()
    assert lines[-2].startswith("model=als growth_exponent=")
    assert float(lines[-2].split("=")[-1]) == float(lines[-2].split("=")[-1])  # a number, not nan
    assert lines[-1] == "model=not-a-model growth_exponent=nan"
    table = [line.split() for line in lines if line.startswith("als ")]
    assert [row[1] for row in table] == ["2,000", "20,000"]
    assert [row[2:4] for row in table] == [list(f"{v:,}" for v in scale.shape_for(n)) for n in (2_000, 20_000)]
    for row in table:
        # epoch seconds (a tiny ALS iteration may print as 0.00), peak RSS in MB, NDCG@10
        assert float(row[5]) >= 0 and float(row[9].replace(",", "")) > 0 and 0.0 <= float(row[-1]) <= 1.0
    assert sum("skipped: 'not-a-model' is not a registered model" in line for line in lines) == 2


# --- pseudo-titles of the generator -------------------------------------------------------------
def test_pseudo_titles_keep_the_ratings_and_give_movielens_style_titles_with_the_catalogue_year():
    numbered = generate_synthetic(n_users=200, n_items=3_000, n_interactions=6_000, seed=3)
    pseudo = generate_synthetic(n_users=200, n_items=3_000, n_interactions=6_000, titles="pseudo", seed=3)
    for name in ("users", "items", "ratings", "timestamps"):
        np.testing.assert_array_equal(getattr(numbered, name), getattr(pseudo, name))
    assert numbered.catalogue["title"].iloc[16] == f"Synthetic Movie 17 ({numbered.catalogue['year'].iloc[16]})"
    titles = pseudo.catalogue["title"].tolist()
    assert titles == generate_synthetic(n_users=200, n_items=3_000, n_interactions=6_000, titles="pseudo", seed=3).catalogue["title"].tolist()
    years = [parse_title(title)[1] for title in titles]
    assert years == pseudo.catalogue["year"].tolist()
    assert len(set(titles)) > 0.9 * len(titles)  # varied, a few repeats allowed
    moved = [(raw, shown) for raw, shown in zip(titles, pseudo.catalogue["display_title"]) if ", The (" in raw]
    assert len(moved) > 100 and all(shown.startswith("The ") for _, shown in moved)


def test_pseudo_titles_mix_common_and_rare_words_and_sequels():
    titles = pseudo_titles(np.random.default_rng(0), 20_000)
    words = [word for title in titles for word in title.replace(":", " ").replace(",", " ").split()]
    counts = np.sort(np.unique(words, return_counts=True)[1])[::-1]
    assert counts[0] > 20 * np.median(counts)  # Zipf-like: a few words in thousands of titles
    assert 0.03 < np.mean([title.endswith((" 2", " 3", " II", " III", " Returns", " Reloaded", " Part 2")) for title in titles]) < 0.08
    assert 0.05 < np.mean([":" in title for title in titles]) < 0.12


def test_titles_style_is_validated():
    assert TITLE_STYLES == ("numbered", "pseudo")
    with pytest.raises(ValueError, match=r"titles must be one of \('numbered', 'pseudo'\), got 'fancy'"):
        generate_synthetic(n_users=10, n_items=10, n_interactions=50, titles="fancy")


def test_peak_memory_is_at_least_the_current_memory():
    scale._current_rss_mb()  # warm the function itself
    ballast = np.ones(16 * 2**20 // 8)  # 16 MiB touched
    peak, now = scale._peak_rss_mb(), scale._current_rss_mb()
    assert ballast.sum() == len(ballast)
    if now > 0:  # /proc is there (Linux)
        assert peak >= now - 1.0 and now > 16.0
