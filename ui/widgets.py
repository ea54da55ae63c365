"""Small pieces several pages share: how a movie is shown, the half-star rating control, and
the error boundary that turns library errors into plain messages (never a traceback)."""

from __future__ import annotations

import logging
import re
import unicodedata
from contextlib import contextmanager
from typing import Iterator

import pandas as pd
import streamlit as st

from recengine.data.movielens import (
    DatasetIntegrityError,
    DatasetNotFoundError,
    DownloadError,
    UnsafeArchiveError,
    download_dataset,
)
from recengine.models.base import ArtefactError, NotFittedError, TrainingError
from recengine.onboarding import RATING_CHOICES
from ui import cached, state

logger = logging.getLogger("recengine.app")

GENRE_ICONS = {
    "Action": "💥",
    "Adventure": "🧭",
    "Animation": "🎨",
    "Children's": "🧸",
    "Children": "🧸",
    "Comedy": "😄",
    "Crime": "🕵️",
    "Documentary": "🎥",
    "Drama": "🎭",
    "Fantasy": "🐉",
    "Film-Noir": "🚬",
    "Horror": "👻",
    "IMAX": "🎞️",
    "Musical": "🎵",
    "Mystery": "🔍",
    "Romance": "💞",
    "Sci-Fi": "🚀",
    "Thriller": "🔪",
    "War": "🎖️",
    "Western": "🤠",
}


_MARKDOWN_SPECIALS = re.compile(r"([\\`*_\[\]$~|#])")


def md(text: object) -> str:
    """`text` with Markdown's special characters escaped, for titles inside st.markdown strings
    ("M*A*S*H", "The Secret of My Succe$s" and "[REC]" must not turn into emphasis, LaTeX or links)."""
    return _MARKDOWN_SPECIALS.sub(r"\\\1", str(text))


def quoted(text: object, limit: int = 60) -> str:
    """What a person typed, safe to echo inside a Markdown message: control characters (NUL,
    ANSI escapes, line breaks) become spaces, runs of whitespace one space, at most `limit`
    characters (an ellipsis marks the cut), Markdown escaped. A 10,000-character query is
    shown as its first words, never whole."""
    visible = "".join(" " if unicodedata.category(ch).startswith("C") else ch for ch in str(text))
    cleaned = " ".join(visible.split())
    if len(cleaned) > limit:
        cleaned = cleaned[: limit - 1].rstrip() + "…"
    return md(cleaned)


def half_label(rating: float) -> str:
    """A half-star rating as people write it: 4.5 -> "4½", 0.5 -> "½", 3.0 -> "3"."""
    whole = int(rating)
    half = "½" if rating - whole >= 0.5 else ""
    return f"{whole if whole or not half else ''}{half}"


def stars(rating: float) -> str:
    """A rating drawn with stars: 4.5 -> "★★★★½", 3.0 -> "★★★"."""
    whole = int(rating)
    return "★" * whole + ("½" if rating - whole >= 0.5 else "")


def genre_text(genres: tuple[str, ...] | list[str], limit: int = 3) -> str:
    """Genres with their icons, e.g. "🚀 Sci-Fi · 💥 Action"."""
    shown = [f"{GENRE_ICONS.get(genre, '🎬')} {md(genre)}" for genre in list(genres)[:limit]]
    return " · ".join(shown) if shown else "no genre listed"


def movie_caption(row: pd.Series) -> str:
    """Genres, number of ratings and mean rating of a catalogue row, one line."""
    parts = [genre_text(row["genres"])]
    parts.append(f"{int(row['popularity']):,} ratings")
    if pd.notna(row["mean_rating"]) and row["popularity"] > 0:
        parts.append(f"average {float(row['mean_rating']):.1f}★")
    return " · ".join(parts)


def rating_choices(scale: tuple[float, float]) -> list[float]:
    """The half-star ratings inside a dataset's scale (ml-100k's 1..5 has no ½)."""
    low, high = scale
    return [value for value in RATING_CHOICES if low <= value <= high]


def rating_control(
    item_idx: int, *, key: str, scale: tuple[float, float], dataset: str | None = None, compact: bool = False
) -> None:
    """A half-star rating control bound to the profile: picking rates the movie, unpicking
    (or "not rated") forgets it. `compact` draws a select box for narrow columns instead of
    the segmented control.

    The profile is the source of truth: the widget's state is set from it before drawing,
    so the same movie shows the same rating everywhere (batch card, search, map, lists).
    """
    dataset = dataset or state.current_dataset()
    current = state.profile(dataset).ratings.get(int(item_idx))
    choices = rating_choices(scale)
    st.session_state[key] = current if current in choices else None
    common = {
        "key": key,
        "on_change": _on_rating_change,
        "args": (key, int(item_idx), dataset),
        "label_visibility": "collapsed",
    }
    if compact:
        st.selectbox(
            "Your rating", choices[::-1], index=None, format_func=lambda value: f"{stars(value)}  {half_label(value)}",
            placeholder="Rate it…", **common,
        )
    else:
        st.segmented_control(
            "Your rating", options=choices, format_func=half_label,
            help="Your rating in stars (½ = half a star); click again to take it back", **common,
        )


def movie_card(
    item_idx: int,
    catalogue: pd.DataFrame,
    *,
    key: str,
    scale: tuple[float, float],
    dataset: str,
    note: str | None = None,
) -> None:
    """A bordered card: title, genres and counts (plus an optional note), and the rating control."""
    row = catalogue.iloc[int(item_idx)]
    with st.container(border=True):
        extra = f" · {note}" if note else ""
        st.markdown(f"**{md(row['display_title'])}**  \n:gray[{movie_caption(row)}{md(extra)}]")
        rating_control(item_idx, key=key, scale=scale, dataset=dataset)


def _on_rating_change(key: str, item_idx: int, dataset: str) -> None:
    value = st.session_state.get(key)
    profile = state.profile(dataset)
    if value is None:
        profile.unrate(item_idx)
    else:
        profile.rate(item_idx, value)


@contextmanager
def friendly_errors() -> Iterator[None]:
    """Show library errors as plain messages in the page instead of a traceback.

    Missing data gets the loader's own advice (download command, RECENGINE_DATA_DIR) and a
    button to switch to the synthetic dataset; everything else gets one sentence and the
    details go to the server log. Streamlit's own control flow (rerun, stop) passes through,
    as those are BaseExceptions.
    """
    try:
        yield
    except DatasetNotFoundError as error:
        show_missing_dataset(error)
    except DatasetIntegrityError as error:
        st.error(f"**A file of {error.name} is damaged or altered,** so it was not loaded.", icon="🧯")
        st.code(str(error), language=None, wrap_lines=True)
    except TrainingError as error:
        st.error(f"**Training failed.** {error}", icon="🛑")
    except ArtefactError as error:
        st.error(f"**A saved model could not be read** and will be retrained next time. {error}", icon="🗂️")
    except NotFittedError as error:
        st.error(f"**The model is not ready.** {error}", icon="⏳")
    except (ValueError, KeyError, IndexError) as error:
        logger.warning("page error", exc_info=True)
        st.error(f"**That did not work:** {_message(error)}", icon="⚠️")
    except Exception as error:  # the app must never show a traceback
        logger.exception("unexpected error in a page")
        st.error(
            f"**Something went wrong** ({type(error).__name__}: {_message(error)}). "
            "The details are in the server log; try another choice in the sidebar.",
            icon="🛑",
        )


def _message(error: BaseException) -> str:
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    return text or type(error).__name__


def show_missing_dataset(error: DatasetNotFoundError) -> None:
    """Explain that the chosen dataset is not on this machine; offer to download it or to use
    the synthetic dataset instead."""
    st.error(f"**{error.name} is not on this machine.** Use the synthetic dataset for now, or get the real one:", icon="📂")
    st.code(str(error), language=None, wrap_lines=True)
    with st.container(horizontal=True):
        st.button(
            "Use the synthetic dataset instead",
            icon=":material/science:",
            type="primary",
            on_click=use_dataset,
            args=("synthetic",),
        )
        download = st.button(f"Download {error.name} now", icon=":material/download:")
    if download:
        download_with_progress(error.name)


def download_with_progress(name: str) -> None:
    """Fetch a MovieLens release into the user cache with a progress bar, then rerun."""
    bar = st.progress(0.0, text=f"Downloading {name}…")

    def progress(done: int, total: int | None) -> None:
        fraction = min(done / total, 1.0) if total else 0.0
        bar.progress(fraction, text=f"Downloading {name}: {done / 1e6:.1f} MB" + (f" of {total / 1e6:.1f} MB" if total else ""))

    try:
        download_dataset(name, progress=progress)
    except (DownloadError, UnsafeArchiveError) as error:
        st.error(f"**The download did not work.** {error}", icon="🌐")
        return
    cached.datasets.clear()  # the list of what is on disk is stale now
    st.rerun()


def use_dataset(name: str) -> None:
    """Switch the sidebar's dataset (a button callback)."""
    st.session_state[state.DATASET_KEY] = name
