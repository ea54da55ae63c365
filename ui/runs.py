"""What has been trained: training jobs of this process and model folders on disk, shaped for
the training monitor's table and the recommendations page's model comparison."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import pandas as pd
import streamlit as st

from recengine.models.base import ArtefactError, EpochEvent, Recommender, config_from_dict, get_model_class
from recengine.store import ArtefactInfo, ModelKey, ModelStore, TrainingJob
from ui import cached, state
from ui.config_form import changed_values

ACTIVE_STATES = ("queued", "running")
#: Test metrics shown in the table of runs (others stay in the frame for tests and exports).
TABLE_METRICS = ("rmse", "ndcg@10", "precision@10", "hit@10")
#: The model comparison's metrics, as benchmarks/accuracy.py prints them (plus the next-item MRR):
#: meta.json name -> column label.
COMPARISON_METRICS = {
    "rmse": "RMSE", "mae": "MAE", "precision@10": "P@10", "ndcg@10": "NDCG@10", "map@10": "MAP@10", "mrr": "MRR",
}
#: Metrics where a smaller value is better (the others: larger).
LOWER_IS_BETTER = ("rmse", "mae")


def settings_text(model_name: str, config: Mapping[str, Any]) -> str:
    """The hyper-parameters that differ from the model's defaults ("embedding_dim=32, epochs=5"),
    "defaults" when none do."""
    try:
        changed = changed_values(config_from_dict(get_model_class(model_name).Config, dict(config)))
    except ValueError:  # a model family or field this version does not know
        changed = dict(config)
    return ", ".join(f"{name}={value}" for name, value in changed.items()) or "defaults"


def describe_key(key: ModelKey) -> str:
    """ "mf on ml-100k (random split, seed 42) · embedding_dim=16, epochs=3"."""
    return f"{key.describe()} · {settings_text(key.model, key.config_dict())}"


def describe_choice(choice: state.ModelChoice) -> str:
    """A model as the comparison picker shows it: "mf · embedding_dim=32" (+ split when not the app's)."""
    key = cached.model_key(choice)
    where = "" if (key.split, key.seed) == (state.APP_SPLIT, state.APP_SEED) else f" · {key.split} split, seed {key.seed}"
    return f"{key.model} · {settings_text(key.model, key.config_dict())}{where}"


def job_by_slug(store: ModelStore, slug: str | None) -> TrainingJob | None:
    """This process's latest training job for a key's slug (None when there is none)."""
    matches = [job for job in store.jobs() if slug and job.key.slug == slug]
    return matches[-1] if matches else None


def job_history(job: TrainingJob) -> list[EpochEvent]:
    """A job's epoch events; a job that found its model already trained has none, so the
    model's own recorded history stands in."""
    events = list(job.events)
    if not events and job.model is not None:
        events = list(job.model.history)
    return events


@st.cache_data(show_spinner=False, max_entries=256)
def saved_history(path: str, saved_at: str) -> list[EpochEvent]:
    """The per-epoch history in an artefact's meta.json (`saved_at` makes a re-save a new entry)."""
    try:
        history = Recommender.read_meta(path).get("history", [])
    except ArtefactError:
        return []
    fixed = ("epoch", "epochs", "loss", "seconds")
    return [
        EpochEvent(
            int(e["epoch"]), int(e["epochs"]), float(e["loss"]), float(e["seconds"]),
            {name: float(value) for name, value in e.items() if name not in fixed},
        )
        for e in history
        if all(name in e for name in fixed)
    ]


@dataclass
class Runs:
    """The table of runs (one row per key slug, index = slug) and each run's epoch history."""

    table: pd.DataFrame
    histories: dict[str, list[EpochEvent]] = field(default_factory=dict)
    disk_bytes: int = 0
    on_disk: int = 0

    def label(self, slug: str) -> str:
        row = self.table.loc[slug]
        return f"{row['model']} on {row['dataset']} ({row['split']}) · {row['settings']}"


def past_runs(store: ModelStore) -> Runs:
    """Saved models (with their test metrics, size and whether they are loaded) merged with this
    process's jobs (their state: running, cancelled, failed...), newest saved first."""
    rows: dict[str, dict[str, Any]] = {}
    histories: dict[str, list[EpochEvent]] = {}
    artefacts = store.artefacts()
    for info in artefacts:
        rows[info.slug] = {
            "model": info.model, "dataset": info.dataset, "split": f"{info.split} · seed {info.seed}",
            "settings": settings_text(info.model, info.config), "state": "saved", **info.metrics,
            "fit s": recorded_seconds(info.fit_seconds), "on disk": f"{info.size_bytes / 1e6:.1f} MB", "in memory": info.loaded,
            "saved at": info.saved_at.replace("T", " ")[:16],
        }
        histories[info.slug] = saved_history(str(info.path), info.saved_at)
    for job in store.jobs():
        row = rows.setdefault(job.key.slug, {
            "model": job.key.model, "dataset": job.key.dataset, "split": f"{job.key.split} · seed {job.key.seed}",
            "settings": settings_text(job.key.model, job.key.config_dict()),
        })
        row["state"] = job.state
        if job.events or job.key.slug not in histories:
            histories[job.key.slug] = job_history(job)
    return Runs(
        table=pd.DataFrame.from_dict(rows, orient="index"),
        histories=histories,
        disk_bytes=sum(info.size_bytes for info in artefacts),
        on_disk=len(artefacts),
    )


def comparison_choices(choice: state.ModelChoice) -> list[state.ModelChoice]:
    """Models to compare `choice` with on the same dataset: every other family (with the app's
    settings) and every model saved on disk for this dataset (any configuration or split),
    without `choice` itself."""
    options: dict[str, state.ModelChoice] = {}
    for name in cached.models():
        option = state.ModelChoice(choice.dataset, name, state.APP_SPLIT, state.APP_SEED, state.app_hyper(name))
        options.setdefault(cached.model_key(option).slug, option)
    for info in cached.store().artefacts():
        if info.dataset != choice.dataset or info.model not in cached.models():
            continue
        hyper = tuple(sorted((name, tuple(value) if isinstance(value, list) else value) for name, value in info.config.items()))
        option = state.ModelChoice(info.dataset, info.model, info.split, info.seed, hyper)
        try:
            options.setdefault(cached.model_key(option).slug, option)
        except ValueError:  # saved by another version, with settings this one does not accept
            continue
    options.pop(cached.model_key(choice).slug, None)
    return list(options.values())


def recorded_seconds(seconds: float) -> float:
    """Fit seconds as a table shows them: NaN (a blank cell) when the artefact recorded none.

    `ModelStore.artefacts()` reads a meta.json without "fit_seconds" (older artefacts) as 0.0,
    and no real fit takes 0.0 s, so 0.0 stands for "not recorded".
    """
    return float(seconds) if seconds and math.isfinite(seconds) and seconds > 0 else math.nan


def comparison_table(artefacts: Sequence[ArtefactInfo], dataset: str | None = None, split: str | None = None) -> pd.DataFrame:
    """Saved models side by side, one row each (index = slug), like benchmarks/accuracy.py prints them.

    Columns: dataset, split ("random · seed 42"), model, settings (what differs from the model's
    defaults), then `COMPARISON_METRICS` by their labels (RMSE, MAE, P@10, NDCG@10, MAP@10, MRR:
    float64, NaN where a metric does not apply, e.g. RMSE of an implicit model), fit s (NaN when not
    recorded), device ("" when not recorded). Only `dataset` and `split` when given (None keeps
    all). Rows sorted by dataset, split, model and settings.
    """
    rows = {
        info.slug: {
            "dataset": info.dataset,
            "split": f"{info.split} · seed {info.seed}",
            "model": info.model,
            "settings": settings_text(info.model, info.config),
            **{label: float(info.metrics.get(name, math.nan)) for name, label in COMPARISON_METRICS.items()},
            "fit s": recorded_seconds(info.fit_seconds),
            "device": info.device,
        }
        for info in artefacts
        if (dataset is None or info.dataset == dataset) and (split is None or info.split == split)
    }
    columns = ["dataset", "split", "model", "settings", *COMPARISON_METRICS.values(), "fit s", "device"]
    table = pd.DataFrame.from_dict(rows, orient="index", columns=columns)
    for label in (*COMPARISON_METRICS.values(), "fit s"):
        table[label] = table[label].astype("float64")
    return table.sort_values(["dataset", "split", "model", "settings"], kind="stable")


def comparison_text(table: pd.DataFrame) -> pd.DataFrame:
    """A comparison table as the page shows it (`figures_as_text`: metrics with 4 decimals, fit
    seconds with 1)."""
    return figures_as_text(table, {**{label: 4 for label in COMPARISON_METRICS.values()}, "fit s": 1})


def figures_as_text(table: pd.DataFrame, digits: Mapping[str, int]) -> pd.DataFrame:
    """A copy of `table` with each column named in `digits` (those it has) as text with that many
    decimals, and an empty string wherever a figure or any other cell is missing, since
    st.dataframe draws a missing value as "None". Each figure column is left-padded with spaces
    to one width, so sorting the text (clicking a column header) sorts the numbers, the blanks
    first. Boolean columns keep their missing cells (drawn as an empty checkbox)."""
    shown = table.copy()
    for label, places in digits.items():
        if label not in table.columns:
            continue
        numbers = pd.to_numeric(table[label], errors="coerce").astype(float).tolist()
        text = [f"{value:.{places}f}" if math.isfinite(value) else "" for value in numbers]
        width = max((len(cell) for cell in text), default=0)
        shown[label] = [cell.rjust(width) if cell else "" for cell in text]
    for label in shown.columns:
        present = shown[label].dropna()
        is_flag = len(present) > 0 and all(isinstance(value, bool) for value in present)
        if label not in digits and not pd.api.types.is_numeric_dtype(shown[label]) and not is_flag:
            shown[label] = shown[label].astype(object).where(shown[label].notna(), "")
    return shown


def metric_ranking(table: pd.DataFrame, metric: str) -> pd.Series:
    """The `metric` column (a `COMPARISON_METRICS` key) of a comparison table, best first, rows
    without it left out; labelled "model · settings", plus the dataset and split where the table
    holds several ("mf · epochs=3 (random · seed 42)"), for a chart."""
    label = COMPARISON_METRICS[metric]
    values = table[label].dropna().sort_values(ascending=metric in LOWER_IS_BETTER, kind="stable")
    varying = [column for column in ("dataset", "split") if table[column].nunique() > 1]
    names = [
        f"{row['model']} · {row['settings']}" + (f" ({', '.join(row[column] for column in varying)})" if varying else "")
        for _, row in table.loc[values.index].iterrows()
    ]
    return pd.Series(values.to_numpy(), index=names, name=metric)


def train_every_model(store: ModelStore, dataset: str, split: str, seed: int, models: Sequence[str]) -> list[TrainingJob]:
    """Queue a background run of each model family with its default hyper-parameters on one
    dataset and split (the store runs them one at a time; a trained one finishes at once)."""
    return [store.start_training(cached.make_key(dataset, name, split, seed, {})) for name in models]


def jobs_by_slugs(store: ModelStore, slugs: Sequence[str]) -> list[TrainingJob]:
    """This process's latest job for each slug, in the order given (slugs without one left out)."""
    jobs = (job_by_slug(store, slug) for slug in slugs)
    return [job for job in jobs if job is not None]


def batch_summary(jobs: Sequence[TrainingJob]) -> str:
    """One line about a batch of runs: "2 of 6 done · failed als · training neural: Epoch 4/15 · …"."""
    parts = [f"{sum(job.state == 'done' for job in jobs)} of {len(jobs)} done"]
    parts += [f"{job.state} {job.key.model}" for job in jobs if job.state in ("failed", "cancelled")]
    running = next((job for job in jobs if job.state == "running"), None)
    if running is not None:
        parts.append(f"training {running.key.model}: {cached.progress_text(running)}")
    return " · ".join(parts)
