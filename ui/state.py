"""Per-session state: which dataset and model are chosen, and one rating profile per dataset.

A `Profile` lives in `st.session_state["profiles"][dataset]`, so switching datasets keeps
each dataset's ratings apart (item indices mean different movies in different datasets).
The chosen dataset and model are the sidebar widgets' values (`st.session_state["dataset"]`
and `["model"]`); `current_choice()` turns them into the small hashable `ModelChoice` that
keys every cached resource.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import streamlit as st

from recengine.data.movielens import dataset_names

DEFAULT_DATASET = "ml-100k"
DEFAULT_MODEL = "mf"
#: The split and seed the app's own models are trained on (the training monitor may pick others).
APP_SPLIT = "random"
APP_SEED = 42
#: Environment overrides, mainly for tests and demos: the dataset a new session starts on, and
#: hyper-parameters for the app's models as JSON, e.g. '{"mf": {"epochs": 3}}'.
DATASET_ENV = "RECENGINE_DEFAULT_DATASET"
HYPER_ENV = "RECENGINE_APP_HYPER"

DATASET_KEY = "dataset"
MODEL_KEY = "model"
_PROFILES_KEY = "profiles"


class ProfileListener(Protocol):
    """Told about every change of a session `Profile` right after it is made (e.g. to write it
    through to a saved profile, `ui.saved.SavedLink`). Indices are the dataset's item indices."""

    def rated(self, item_idx: int, rating: float) -> None: ...

    def unrated(self, item_idx: int) -> None: ...

    def skipped(self, item_idx: int) -> None: ...

    def unskipped(self, item_idx: int) -> None: ...


@dataclass
class Profile:
    """What the person using the app told us about one dataset's movies.

    ratings: {item_idx: rating} on the dataset's scale; skipped: items marked "haven't seen";
    batch: the onboarding batch on screen; shown: items already offered in earlier batches
    (not rated, not explicitly skipped) so "Next batch" moves on; hide_not_seen: whether
    recommendations leave out the `not_seen` movies (the Recommendations page's switch, which
    the onboarding preview and the latent map follow; a display choice, kept by `reset`);
    listener: when set (a saved profile is active), told about each rate/unrate/skip/unskip as
    it happens. Change ratings and skips through the methods, not the dict and set, so the
    listener hears of them.
    """

    ratings: dict[int, float] = field(default_factory=dict)
    skipped: set[int] = field(default_factory=set)
    batch: list[int] = field(default_factory=list)
    shown: set[int] = field(default_factory=set)
    hide_not_seen: bool = True
    listener: ProfileListener | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.ratings)

    @property
    def not_seen(self) -> set[int]:
        """The movies the person has not seen, as far as we know: the ones marked "haven't seen"
        and the ones offered in earlier batches and left unrated (what `recommend_profile` takes
        as `not_seen`, and the onboarding questions as skipped)."""
        return (self.skipped | self.shown) - set(self.ratings)

    def rate(self, item_idx: int, rating: float) -> None:
        """Record (or change) a rating; a rated item is no longer skipped."""
        item_idx = int(item_idx)
        self.ratings[item_idx] = float(rating)
        self.skipped.discard(item_idx)
        if self.listener is not None:
            self.listener.rated(item_idx, float(rating))

    def unrate(self, item_idx: int) -> None:
        """Forget a rating (no error when there is none)."""
        item_idx = int(item_idx)
        if self.ratings.pop(item_idx, None) is not None and self.listener is not None:
            self.listener.unrated(item_idx)

    def skip(self, item_idx: int) -> None:
        """Mark an item as not seen (and forget any rating of it)."""
        item_idx = int(item_idx)
        self.ratings.pop(item_idx, None)
        self.skipped.add(item_idx)
        if self.listener is not None:
            self.listener.skipped(item_idx)

    def unskip(self, item_idx: int) -> None:
        """Take an item off the not-seen list (no error when it is not on it)."""
        item_idx = int(item_idx)
        if item_idx in self.skipped:
            self.skipped.discard(item_idx)
            if self.listener is not None:
                self.listener.unskipped(item_idx)

    def load(self, ratings: dict[int, float], skipped: set[int], listener: ProfileListener | None = None) -> None:
        """Replace everything with `ratings` (in their order) and `skipped`, with a fresh onboarding
        batch, and set the listener (None: unsaved). The listener is not told: it is the source."""
        self.reset()
        self.ratings.update({int(item): float(rating) for item, rating in ratings.items()})
        self.skipped.update(int(item) for item in skipped)
        self.listener = listener

    def reset(self) -> None:
        """Start over: no ratings, nothing skipped, a fresh onboarding batch, and no longer linked
        to a saved profile (which keeps its ratings; continue it on "Your profiles")."""
        self.ratings.clear()
        self.skipped.clear()
        self.batch.clear()
        self.shown.clear()
        self.listener = None


class ModelChoice(NamedTuple):
    """Which trained model a page uses: small and hashable, the key of every cached resource."""

    dataset: str
    model: str
    split: str = APP_SPLIT
    seed: int = APP_SEED
    hyper: tuple[tuple[str, Any], ...] = ()

    @property
    def hyper_dict(self) -> dict[str, Any]:
        return dict(self.hyper)


def app_hyper(model: str) -> tuple[tuple[str, Any], ...]:
    """Hyper-parameter overrides for the app's `model` from $RECENGINE_APP_HYPER (sorted items).

    The variable holds JSON mapping model names to {name: value}; absent means the model's
    defaults. Malformed JSON is a ValueError that shows the expected form.
    """
    raw = os.environ.get(HYPER_ENV, "").strip()
    if not raw:
        return ()
    try:
        table = json.loads(raw)
    except ValueError as error:
        raise ValueError(f'{HYPER_ENV} must be JSON like {{"mf": {{"epochs": 3}}}}, got {raw!r} ({error})') from None
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise ValueError(f'{HYPER_ENV} must map model names to objects, like {{"mf": {{"epochs": 3}}}}; got {raw!r}')
    return tuple(sorted(table.get(model, {}).items()))


def initial_dataset() -> str:
    """The dataset a new session starts on: ?dataset=… in the URL, else $RECENGINE_DEFAULT_DATASET, else ml-100k.

    Known datasets are the MovieLens releases, "synthetic" and the saved uploads
    (`recengine.data.movielens.dataset_names`), so a link to an upload works. The URL is
    anyone's to write: a name that is not a known dataset (blank, a path, a 10,000-character
    string) is ignored rather than shown back in an error.
    """
    from_url = str(st.query_params.get("dataset") or "").strip()
    if from_url in dataset_names():
        return from_url
    return os.environ.get(DATASET_ENV, "").strip() or DEFAULT_DATASET


def current_dataset() -> str:
    """The dataset chosen in the sidebar (the initial one before the sidebar first renders)."""
    return st.session_state.get(DATASET_KEY) or initial_dataset()


def current_model() -> str:
    """The model family chosen in the sidebar."""
    return st.session_state.get(MODEL_KEY) or DEFAULT_MODEL


def current_choice() -> ModelChoice:
    """The model the pages use: sidebar dataset and model, the app's split, seed and overrides."""
    model = current_model()
    return ModelChoice(current_dataset(), model, APP_SPLIT, APP_SEED, app_hyper(model))


def profile(dataset: str | None = None) -> Profile:
    """This session's profile for `dataset` (the current one by default), created empty."""
    profiles: dict[str, Profile] = st.session_state.setdefault(_PROFILES_KEY, {})
    name = dataset or current_dataset()
    if name not in profiles:
        profiles[name] = Profile()
    return profiles[name]
