"""Latent map: the model's item factors flattened by PCA, with you placed among the movies."""

import numpy as np
import streamlit as st

from recengine.projection import colour_values, project_vector
from recengine.recommend import recommend_profile, similar_to
from ui import cached, charts, state, widgets

COLOUR_OPTIONS = {"genre": "Genre", "popularity": "Popularity", "mean_rating": "Average rating", "bias": "Item bias"}
RECOMMENDED_SHOWN = 10
NEIGHBOURS = 8
#: At most this many points: beyond it a WebGL scatter of a large catalogue takes seconds to build
#: and send (benchmarks/catalogue.py: 90k points ≈ 4 s and 11 MB of JSON) and shows only a blur.
MAX_POINTS = 20_000

choice = state.current_choice()
data = cached.dataset(choice.dataset)
catalogue = data.catalogue
profile = state.profile(choice.dataset)

st.title("Latent map")
st.caption(
    "Every movie is a point in the model's taste space; PCA flattens it to the two (or three) directions "
    "along which the movies differ most. Nearby movies are liked by the same people."
)
model = cached.model(choice)
factor_dim = model.item_factors().shape[1]


def has_item_bias() -> bool:
    try:
        colour_values(catalogue, np.zeros(1, dtype=np.int64), "bias", model)
    except ValueError:
        return False
    return True


controls = st.columns([5, 4, 1], vertical_alignment="bottom")
colour_keys = [key for key in COLOUR_OPTIONS if key != "bias" or has_item_bias()]
colour_by = controls[0].segmented_control(
    "Colour by", colour_keys, format_func=COLOUR_OPTIONS.get, default="genre", key="map-colour"
) or "genre"
n_items = len(catalogue)
if n_items > 100:
    top_n = controls[1].slider(
        "Most-rated movies shown", 100, min(n_items, MAX_POINTS), min(500, n_items), step=50 if n_items > 1000 else 10,
        key="map-top-n", help=f"At most {MAX_POINTS:,} of the {n_items:,} movies" if n_items > MAX_POINTS else None,
    )
else:
    top_n = n_items
    controls[1].caption(f"All {n_items} movies shown")
three_d = controls[2].toggle("3-D", key="map-3d", disabled=factor_dim < 3, help="Three principal components (no point selection in 3-D)")
n_components = 3 if three_d and factor_dim >= 3 else 2

projection = cached.projection(choice, n_components, int(top_n))
recommended, you = [], None
if profile.ratings:
    recommended = [
        rec.item_idx
        for rec in recommend_profile(
            model, catalogue, profile.ratings, k=RECOMMENDED_SHOWN, explain=False, not_seen=profile.not_seen,
            hide_not_seen=profile.hide_not_seen,
        )
    ]
    user_vector = model.user_vector(model.fold_in(profile.ratings))
    you = project_vector(projection, user_vector) if user_vector is not None else None
figure = charts.latent_map(
    projection,
    catalogue,
    colour_values(catalogue, projection.item_idx, colour_by, model),
    colour_by,
    rated=profile.ratings,
    recommended=recommended,
    you=you,
)

if profile.ratings and you is None:
    why = (
        "reads your history and scores the movies with separate output weights, not with the movie vectors drawn here"
        if model.sequential
        else "describes you by something other than a vector in the movies' space"
    )
    st.info(
        f"**No “you are here” marker:** {choice.model} {why}, so no point on this map stands for you. "
        "Your ratings and recommendations are still marked.",
        icon="ℹ️",
    )

chart_column, detail_column = st.columns([3, 1], gap="medium")
with chart_column:
    if n_components == 3:
        st.plotly_chart(figure, width="stretch", key="map-3d-chart")
        selected_item = None
    else:
        event = st.plotly_chart(figure, width="stretch", key="map-chart", on_select="rerun", selection_mode="points")
        points = event.selection.points if event else []
        selected_item = next((int(point["customdata"]) for point in points if point.get("customdata") is not None), None)

with detail_column:
    if selected_item is None:
        st.markdown("**Click a movie** to see its neighbours and rate it.")
        if you is not None:
            st.caption("★ your ratings · ◆ recommended for you · ✕ you: movies further along the dotted arrow score higher for you.")
        elif profile.ratings:
            st.caption("★ your ratings · ◆ recommended for you.")
        else:
            st.caption("Rate movies and you appear on the map, with your ratings and recommendations highlighted.")
    else:
        row = catalogue.iloc[selected_item]
        st.markdown(f"**{widgets.md(row['display_title'])}**")
        st.caption(widgets.movie_caption(row))
        key = f"map-rate-{choice.dataset}-{selected_item}"
        widgets.rating_control(selected_item, key=key, scale=data.rating_scale, dataset=choice.dataset, compact=True)
        st.markdown("**Nearest in taste space**")
        for _, title, score in similar_to(model, selected_item, NEIGHBOURS, catalogue=catalogue):
            st.markdown(f"{widgets.md(title)} :gray[· {score:.2f}]")

st.subheader("What the axes mean")
variance_columns = st.columns(n_components + 1)
for number, share in enumerate(projection.explained_variance_ratio):
    variance_columns[number].metric(
        f"Axis {number + 1}", f"{share:.1%}", help="Share of the variance of the shown movies' factors along this axis"
    )
variance_columns[-1].metric(
    "Together", f"{projection.explained_variance_ratio.sum():.1%}",
    help=f"The factors have {factor_dim} dimensions; the rest is off the map",
)
for summary in cached.components(choice, n_components, int(top_n)):
    st.markdown(
        f"**Axis {summary.component + 1}** · low end: {widgets.md(', '.join(summary.low_titles[:4]))}  \n"
        f"high end: {widgets.md(', '.join(summary.high_titles[:4]))}"
    )
