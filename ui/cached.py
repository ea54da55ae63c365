"""`st.cache_resource` wrappers over the model store: one copy per process, shared read-only.

Every function takes small hashable arguments only (dataset name, `ModelChoice`, ints) and
returns an object that nobody mutates (numpy results are made read-only). The store itself
remembers datasets, splits and trained models; these wrappers add what pages derive from
them (title search, onboarding order, the latent-map projection) so a warm rerun recomputes
nothing.

`model(choice)` is the one entry that may train: when neither memory nor `models/` has the
model, it starts the store's background training job and shows its progress (an `st.status`
with a progress bar fed by the job's epoch events) until the model is ready.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Mapping

import numpy as np
import streamlit as st
import threadpoolctl

from recengine.data.dataset import Dataset
from recengine.data.movielens import DatasetInfo, available_datasets
from recengine.models.base import (
    Recommender,
    TrainingError,
    config_from_dict,
    describe_device,
    get_model_class,
    model_names,
)
from recengine.onboarding import Questioner
from recengine.onboarding import onboarding_order as _onboarding_order
from recengine.projection import (
    ComponentSummary,
    ItemProjection,
    describe_components,
    project_items,
)
from recengine.recommend import CoWatch
from recengine.search import TitleSearch
from recengine.store import ModelKey, ModelStore, TrainingJob, default_store
from ui.state import ModelChoice

_POLL_SECONDS = 0.25


@st.cache_resource(show_spinner=False)
def single_threaded_blas() -> threadpoolctl.threadpool_limits:
    """Run numpy's BLAS on one thread in this process (once; kept alive by the cache).

    Pages mix many small numpy solves (fold-in, exact reasons) with torch scoring. On a
    small machine OpenBLAS's worker threads and torch's OpenMP threads then fight over the
    same cores and a 129x129 solve takes 30+ ms instead of 0.4 ms; one BLAS thread makes
    warm page runs about ten times faster. Training (torch) keeps its own threads.
    """
    return threadpoolctl.threadpool_limits(limits=1, user_api="blas")


@st.cache_resource(show_spinner=False)
def store() -> ModelStore:
    """The process's model store (models under $RECENGINE_MODELS_DIR, else <repo>/models)."""
    return default_store()


@st.cache_resource(show_spinner=False, ttl=60)
def datasets() -> list[DatasetInfo]:
    """Every release the app can offer (found on disk or downloadable), refreshed each minute."""
    return available_datasets()


@st.cache_resource(show_spinner=False)
def models() -> list[str]:
    """Registered model family names."""
    return model_names()


@st.cache_resource(show_spinner=False)
def sequential_models() -> list[str]:
    """Registered next-item model families (`sequential = True`), in registration order."""
    return [name for name in model_names() if get_model_class(name).sequential]


@st.cache_resource(show_spinner=False)
def device_label() -> str:
    """'CPU' or the GPU's name, for the sidebar."""
    return describe_device(store().device)


@st.cache_resource(show_spinner="Loading the dataset…")
def dataset(name: str) -> Dataset:
    """The full dataset `name` (DatasetNotFoundError when it is not on this machine)."""
    return store().dataset(name)


@st.cache_resource(show_spinner=False)
def train_part(name: str, split: str, seed: int) -> Dataset:
    """The training part of a split (what the app's models were fitted on)."""
    return store().split(name, split, seed).train


@st.cache_resource(show_spinner=False)
def genres(name: str) -> list[str]:
    """Sorted genre names of a dataset's catalogue."""
    return sorted({genre for item_genres in dataset(name).catalogue["genres"] for genre in item_genres})


@st.cache_resource(show_spinner=False)
def title_search(name: str) -> TitleSearch:
    """Fuzzy title search over a dataset's catalogue (built once per dataset)."""
    return TitleSearch(dataset(name).catalogue)


def model_key(choice: ModelChoice) -> ModelKey:
    """The store's cache key for a choice (validates model, split and hyper-parameters)."""
    return make_key(choice.dataset, choice.model, choice.split, choice.seed, choice.hyper_dict)


def make_key(dataset: str, model: str, split: str, seed: int, hyper: Mapping[str, Any]) -> ModelKey:
    """`store.key(...)` with hyper-parameters passed as a mapping.

    `ModelStore.key(dataset, model, split, seed, **hyper)` cannot take a hyper-parameter named
    `seed` (the split's seed has that name), yet model configs have one; so the key is made
    without hyper-parameters and its config replaced by the validated one.
    """
    key = store().key(dataset, model, split=split, seed=seed)
    if not hyper:
        return key
    return dataclasses.replace(key, config=config_from_dict(get_model_class(model).Config, dict(hyper)))


def model(choice: ModelChoice) -> Recommender:
    """The trained model for `choice`: from memory or `models/`, else trained now with progress shown."""
    if store().get(model_key(choice)) is None:
        wait_for_training(choice)
    return _trained_model(choice)


@st.cache_resource(show_spinner=False, max_entries=32)
def _trained_model(choice: ModelChoice) -> Recommender:
    trained = store().get_or_train(model_key(choice))
    threading.Thread(target=warm_up, args=(trained,), name=f"recengine-warm-{choice.model}", daemon=True).start()
    return trained


def warm_up(model: Recommender) -> None:
    """Build what the first rating will need (the co-watch weights of `recommend_profile` and the
    adaptive questioner: 0.5 s and 0.14 s on ml-100k) while the person reads the page, so their
    first click is answered at warm speed. Both are single-flight caches: a page asking meanwhile
    waits for this build instead of starting its own. Failures are left for that page to report."""
    try:
        CoWatch.of_model(model)
        Questioner.of_model(model)
    except Exception:  # noqa: BLE001 - the page that needs them raises the same error in context
        pass


def wait_for_training(choice: ModelChoice) -> None:
    """Train `choice` in the store's background thread, showing its progress until it is done.

    Runs once per model and machine: the store saves the result under `models/`, so later
    starts load it. If the person navigates away meanwhile, the job keeps running and the
    next page that needs the model picks it up. Raises TrainingError when training fails.
    """
    job = store().start_training(model_key(choice))
    with st.status(
        f"Training **{choice.model}** on **{choice.dataset}**: first use only, later starts load it from disk",
        expanded=True,
    ) as status:
        bar = st.progress(0.0, text="Starting…")
        while job.state in ("queued", "running"):
            bar.progress(min(max(job.progress, 0.0), 1.0), text=progress_text(job))
            job.wait(_POLL_SECONDS)
        if job.state != "done":
            status.update(label=f"Training {choice.model} on {choice.dataset} {job.state}", state="error")
            raise TrainingError(job.error or f"training of {choice.model} on {choice.dataset} was {job.state}")
        bar.progress(1.0, text=progress_text(job))
        status.update(
            label=f"Trained {choice.model} on {choice.dataset} in {job.elapsed:.1f} s", state="complete", expanded=False
        )


def progress_text(job: TrainingJob) -> str:
    """One line about a running job: epoch, loss, the last validation metric, time."""
    if job.state == "queued":
        return "Waiting for another training run to finish (one runs at a time)…"
    events = list(job.events)
    if not events:
        return f"Preparing data… {job.elapsed:.0f} s"
    last = events[-1]
    parts = [f"Epoch {last.epoch}/{last.epochs}", f"loss {last.loss:.4f}"]
    parts += [f"{name} {value:.4f}" for name, value in list(last.metrics.items())[:1]]
    parts.append(f"{job.elapsed:.0f} s")
    if job.eta_seconds is not None and job.state == "running":
        parts.append(f"about {job.eta_seconds:.0f} s left")
    return " · ".join(parts)


@st.cache_resource(show_spinner=False, max_entries=32)
def onboarding_order(choice: ModelChoice) -> np.ndarray:
    """Movies to ask a newcomer about, most informative first (read-only int64 array)."""
    order = _onboarding_order(_trained_model(choice), train_part(choice.dataset, choice.split, choice.seed))
    order.setflags(write=False)
    return order


@st.cache_resource(show_spinner=False, max_entries=64)
def projection(choice: ModelChoice, n_components: int, top_n: int) -> ItemProjection:
    """PCA of the model's item factors over the `top_n` most-rated movies."""
    return project_items(_trained_model(choice), dataset(choice.dataset).catalogue, n_components=n_components, top_n=top_n)


@st.cache_resource(show_spinner=False, max_entries=64)
def components(choice: ModelChoice, n_components: int, top_n: int) -> list[ComponentSummary]:
    """The titles at both ends of each map axis."""
    return describe_components(projection(choice, n_components, top_n), dataset(choice.dataset).catalogue)


