"""Plotly figures of the app: the latent map, similarity bars and training curves.

Each function takes numbers the library computed and returns a `go.Figure`; nothing here
computes recommendations. Marker colours follow the app theme (`.streamlit/config.toml`).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from recengine.models.base import EpochEvent
from recengine.projection import ItemProjection
from ui.widgets import stars

ACCENT = "#E4572E"
GOLD = "#FFC400"
CATEGORY_COLOURS = (
    "#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#FF9DA6", "#9D755D", "#BAB0AC",
    "#EECA3B", "#2F4B7C", "#A05195", "#D45087", "#665191", "#008080", "#7F7F7F", "#BCBD22", "#17BECF",
)
#: Colour bar titles of the continuous colourings of the map.
COLOUR_TITLES = {"popularity": "log₁₀ ratings", "mean_rating": "average ★", "bias": "item bias"}
MAX_METRIC_PANELS = 3


def latent_map(
    projection: ItemProjection,
    catalogue: pd.DataFrame,
    colours: np.ndarray,
    colour_by: str,
    *,
    rated: Mapping[int, float],
    recommended: Sequence[int] = (),
    you: np.ndarray | None = None,
) -> go.Figure:
    """The movies of `projection` as a scatter (WebGL `Scattergl` in 2-D, `Scatter3d` in 3-D).

    colours: one value per projected item (`recengine.projection.colour_values`): genre names
        give one legend entry per genre, numbers a continuous colour scale.
    rated / recommended: the person's ratings and recommendations, drawn on top (stars and
        diamonds) when they are among the projected items.
    you: the person's position on the map (`project_vector`), drawn with a dotted arrow from
        the origin; None leaves it out.
    Every point carries its item index as `customdata`, so a selection names the movie.
    """
    items = projection.item_idx
    coords = projection.coords
    three_d = projection.n_components == 3
    titles = catalogue["display_title"].to_numpy()[items]
    genres = catalogue["genres"].to_numpy()[items]
    counts = catalogue["popularity"].to_numpy()[items]
    hover = [
        f"<b>{title}</b><br>{' · '.join(genre) or 'no genre'}<br>{count:,} ratings"
        for title, genre, count in zip(titles, genres, counts, strict=True)
    ]
    position_of = {int(item): position for position, item in enumerate(items.tolist())}

    def scatter(at: np.ndarray, **style) -> go.Scattergl | go.Scatter3d:
        common = {"mode": "markers", "customdata": items[at], "hovertemplate": "%{text}<extra></extra>"}
        if three_d:
            return go.Scatter3d(x=coords[at, 0], y=coords[at, 1], z=coords[at, 2], **common, **style)
        return go.Scattergl(x=coords[at, 0], y=coords[at, 1], **common, **style)

    figure = go.Figure()
    if colour_by == "genre":
        labels = np.asarray(colours).astype(str)
        names, sizes = np.unique(labels, return_counts=True)
        for number, name in enumerate(names[np.argsort(-sizes, kind="stable")]):
            at = np.flatnonzero(labels == name)
            colour = CATEGORY_COLOURS[number % len(CATEGORY_COLOURS)]
            figure.add_trace(scatter(at, name=name, text=[hover[i] for i in at], marker={"size": 6, "opacity": 0.75, "color": colour}))
    else:
        at = np.arange(len(items))
        colour_bar = {"title": {"text": COLOUR_TITLES.get(colour_by, colour_by)}, "thickness": 12}
        marker = {"size": 6, "opacity": 0.8, "color": colours, "colorscale": "Viridis", "showscale": True, "colorbar": colour_bar}
        figure.add_trace(scatter(at, name="movies", text=hover, showlegend=False, marker=marker))

    rated_at = np.array([position_of[item] for item in rated if item in position_of], dtype=np.int64)
    if rated_at.size:
        text = [f"{hover[i]}<br>you rated it {stars(rated[int(items[i])])}" for i in rated_at]
        marker = {"size": 14, "symbol": "circle-open" if three_d else "star", "color": GOLD, "line": {"width": 1.5, "color": "#8A5A00"}}
        figure.add_trace(scatter(rated_at, name="rated by you", text=text, marker=marker))
    recommended_at = np.array([position_of[item] for item in recommended if item in position_of], dtype=np.int64)
    if recommended_at.size:
        text = [f"{hover[i]}<br>recommended for you" for i in recommended_at]
        marker = {"size": 12, "symbol": "diamond", "color": ACCENT, "line": {"width": 1.5, "color": "white"}}
        figure.add_trace(scatter(recommended_at, name="recommended for you", text=text, marker=marker))
    if you is not None:
        arrow = {"mode": "lines", "line": {"color": ACCENT, "dash": "dot", "width": 2}, "hoverinfo": "skip", "showlegend": False}
        point = {
            "mode": "markers+text", "name": "you are here", "text": ["you are here"], "textposition": "top center",
            "marker": {"size": 8 if three_d else 18, "symbol": "x", "color": ACCENT}, "hovertemplate": "you are here<extra></extra>",
        }
        if three_d:
            figure.add_trace(go.Scatter3d(x=[0, you[0]], y=[0, you[1]], z=[0, you[2]], **arrow))
            figure.add_trace(go.Scatter3d(x=[you[0]], y=[you[1]], z=[you[2]], **point))
        else:
            figure.add_trace(go.Scatter(x=[0, you[0]], y=[0, you[1]], **arrow))
            figure.add_trace(go.Scatter(x=[you[0]], y=[you[1]], **point))

    axis_titles = [f"axis {number + 1} ({share:.0%} of variance)" for number, share in enumerate(projection.explained_variance_ratio)]
    layout = {"height": 640, "margin": {"l": 10, "r": 10, "t": 30, "b": 10}, "legend": {"itemsizing": "constant"}, "dragmode": "pan"}
    if three_d:
        layout["scene"] = {"xaxis_title": axis_titles[0], "yaxis_title": axis_titles[1], "zaxis_title": axis_titles[2]}
    else:
        layout.update(xaxis_title=axis_titles[0], yaxis_title=axis_titles[1], clickmode="event+select")
    figure.update_layout(**layout)
    return figure


def similarity_bars(similar: Sequence[tuple[int, str, float]]) -> go.Figure:
    """Horizontal bars of [(item_idx, title, similarity)], most similar on top."""
    titles = [title for _, title, _ in similar][::-1]
    scores = [score for _, _, score in similar][::-1]
    low = min([0.0, *scores])
    figure = go.Figure(
        go.Bar(
            x=scores,
            y=titles,
            orientation="h",
            marker={"color": scores, "colorscale": "Tealgrn", "cmin": low, "cmax": 1.0},
            text=[f"{score:.2f}" for score in scores],
            textposition="outside",
            hovertemplate="%{y}<br>similarity %{x:.3f}<extra></extra>",
        )
    )
    figure.update_layout(
        height=max(220, 28 * len(similar) + 60),
        margin={"l": 10, "r": 40, "t": 10, "b": 30},
        xaxis={"title": "cosine similarity of the item factors", "range": [min(0.0, low - 0.05), 1.08]},
        yaxis={"automargin": True},
    )
    return figure


def training_curves(events: Sequence[EpochEvent]) -> go.Figure:
    """Training loss and each validation metric (up to three) per epoch, side by side."""
    metric_names = list(dict.fromkeys(name for event in events for name in event.metrics))[:MAX_METRIC_PANELS]
    figure = make_subplots(rows=1, cols=1 + len(metric_names), subplot_titles=["training loss", *metric_names], horizontal_spacing=0.08)
    epochs = [event.epoch for event in events]
    losses = [event.loss for event in events]
    figure.add_trace(go.Scatter(x=epochs, y=losses, mode="lines+markers", name="loss", line={"color": "#4C78A8"}), row=1, col=1)
    for column, name in enumerate(metric_names, start=2):
        values = [event.metrics.get(name) for event in events]
        figure.add_trace(go.Scatter(x=epochs, y=values, mode="lines+markers", name=name, line={"color": ACCENT}), row=1, col=column)
    figure.update_xaxes(title_text="epoch", dtick=1 if len(epochs) <= 20 else None)
    figure.update_layout(height=300, showlegend=False, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return figure


def compared_runs(histories: Mapping[str, Sequence[EpochEvent]], metric: str) -> go.Figure:
    """One line per run ({label: events}) of `metric` ("loss" or a validation metric) per epoch."""
    figure = go.Figure()
    for label, events in histories.items():
        values = [event.loss if metric == "loss" else event.metrics.get(metric) for event in events]
        figure.add_trace(go.Scatter(x=[event.epoch for event in events], y=values, mode="lines+markers", name=label))
    figure.update_layout(
        height=340, xaxis_title="epoch", yaxis_title=metric, margin={"l": 10, "r": 10, "t": 20, "b": 10},
        legend={"orientation": "h", "y": -0.25},
    )
    return figure


def metric_bars(ranking: pd.Series, metric: str, lower_is_better: bool) -> go.Figure:
    """Horizontal bars of one metric per model (`ui.runs.metric_ranking`: labels -> values, best
    first), the best on top and drawn in the accent colour, the value printed at each bar's end."""
    labels, values = list(ranking.index)[::-1], ranking.to_numpy(dtype=np.float64)[::-1]
    colours = ["#4C78A8"] * len(values)
    if len(values):
        colours[-1] = ACCENT
    figure = go.Figure(
        go.Bar(
            x=values,
            y=labels,
            orientation="h",
            marker={"color": colours},
            text=[f"{value:.4f}" for value in values],
            textposition="outside",
            cliponaxis=False,
            hovertemplate=f"%{{y}}<br>{metric} %{{x:.4f}}<extra></extra>",
        )
    )
    direction = "lower is better" if lower_is_better else "higher is better"
    figure.update_layout(
        height=max(200, 30 * len(values) + 80),
        margin={"l": 10, "r": 60, "t": 10, "b": 40},
        xaxis={"title": f"{metric} ({direction})", "rangemode": "tozero"},
        yaxis={"automargin": True, "type": "category"},
    )
    return figure
