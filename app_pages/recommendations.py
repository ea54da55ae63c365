"""Recommendations: the top movies for your profile, why each one, and how two models differ."""

import pandas as pd
import streamlit as st

from recengine.data.dataset import parse_title
from recengine.onboarding import GOOD_PROFILE_SIZE
from recengine.recommend import (
    DEFAULT_MIN_RATINGS,
    DEFAULT_NOVELTY,
    NOVELTY_RANGE,
    Recommendation,
    RecommendationFilter,
    compare_models,
    popularity_overlap,
    profile_is_thin,
    recommend_profile,
)
from ui import cached, runs, state, widgets

REASONS_SHOWN = 3
#: Default floor on a movie's number of ratings (few ratings, noisy predictions).
MIN_RATINGS = DEFAULT_MIN_RATINGS
SHARED_ROW = "background-color: rgba(255, 196, 0, 0.28)"

choice = state.current_choice()
data = cached.dataset(choice.dataset)
catalogue = data.catalogue
profile = state.profile(choice.dataset)

st.title("Recommendations")
if not profile.ratings:
    st.info("Rate a few movies first: recommendations are built from your ratings, and about ten is plenty.", icon="⭐")
    st.page_link("app_pages/rate_movies.py", label="Rate movies", icon=":material/star_rate:")
    st.stop()

model = cached.model(choice)
train = cached.train_part(choice.dataset, choice.split, choice.seed)


def reasons_text(rec: Recommendation) -> str:
    """ "Alien 5★, Aliens 4½★": the ratings that raise the score most, strongest first."""
    positive = [reason for reason in rec.reasons if reason.contribution > 0][:REASONS_SHOWN]
    if not positive:
        return "none of your ratings: the movie's own appeal"
    return ", ".join(f"{parse_title(reason.title)[0]} {widgets.half_label(reason.rating)}★" for reason in positive)


def recommendation_frame(recommendations: list[Recommendation], explicit: bool) -> pd.DataFrame:
    """One row per recommendation, numbered from 1, for st.dataframe."""
    return pd.DataFrame(
        {
            "Title": [rec.title for rec in recommendations],
            "Genres": [" · ".join(rec.genres) for rec in recommendations],
            ("Predicted" if explicit else "Score"): [rec.predicted_rating if explicit else rec.score for rec in recommendations],
            "Because you rated": [reasons_text(rec) for rec in recommendations],
        },
        index=pd.RangeIndex(1, len(recommendations) + 1, name="#"),
    )


def score_column(explicit: bool) -> dict:
    """A star bar for predicted ratings, a plain number for implicit models' scores."""
    if explicit:
        low, high = data.rating_scale
        return {"Predicted": st.column_config.ProgressColumn("Predicted", min_value=low, max_value=high, format="%.1f ★", width=110)}
    return {"Score": st.column_config.NumberColumn("Score", format="%.3f", width="small")}


# --- filters ------------------------------------------------------------------------------------------
years = catalogue["year"].dropna()
first_year, last_year = (int(years.min()), int(years.max())) if len(years) else (1900, 2030)
with st.container(border=True):
    genre_column, year_column, count_column = st.columns([2, 2, 1])
    genres = genre_column.multiselect("Genres", cached.genres(choice.dataset), placeholder="Any genre", key="rec-genres")
    year_range = year_column.slider("Release year", first_year, last_year, (first_year, last_year), key="rec-years")
    min_ratings = count_column.number_input(
        "At least … ratings", min_value=0, value=MIN_RATINGS, step=10, key="rec-min-ratings",
        help="Movies rated by only a handful of people get noisy predictions",
    )
    novelty_column, diversity_column, k_column = st.columns([2, 2, 1])
    novelty = novelty_column.slider(
        "Novelty", *NOVELTY_RANGE, DEFAULT_NOVELTY, 0.05, key="rec-novelty",
        help="Above 0 pushes well-known movies down in favour of lesser-known ones; below 0 favours what people "
        f"usually watch. The default, {DEFAULT_NOVELTY:g}, ranked best for new users in validation",
    )
    diversity = diversity_column.slider(
        "Diversity", 0.0, 1.0, 0.0, 0.05, key="rec-diversity",
        help="Avoid near-duplicates: each pick is penalised for resembling the ones above it",
    )
    k = k_column.number_input("How many", min_value=5, max_value=100, value=20, step=5, key="rec-k")
filters = RecommendationFilter(
    genres=tuple(genres),
    year_range=None if tuple(year_range) == (first_year, last_year) else tuple(year_range),
    min_ratings=int(min_ratings),
)

# --- the honest flag ------------------------------------------------------------------------------------
if profile_is_thin(model, profile.ratings, train):
    overlap = popularity_overlap(model, profile.ratings, train)
    if len(profile.ratings) < GOOD_PROFILE_SIZE:
        st.warning(
            f"Your profile is still thin: {len(profile.ratings)} of about {GOOD_PROFILE_SIZE} ratings. Until then the list "
            f"leans on what is popular ({overlap:.0%} of your top 10 are among the 10 most-watched movies).",
            icon="🌱",
        )
    else:
        st.warning(
            f"This list is mostly popularity: {overlap:.0%} of your top 10 are among the 10 most-watched movies. "
            "Rating a few less mainstream movies you liked makes it personal.",
            icon="🌱",
        )

for_you, side_by_side = st.tabs(["For you", "Compare two models"])

# --- for you ----------------------------------------------------------------------------------------------
with for_you:
    recommendations = recommend_profile(
        model, catalogue, profile.ratings, k=int(k), filters=filters, novelty=novelty, diversity=diversity
    )
    if not recommendations:
        st.info("No movie passes these filters. Widen the years or genres, or lower the minimum number of ratings.", icon="🔎")
    else:
        st.dataframe(
            recommendation_frame(recommendations, model.explicit),
            column_config={
                "Title": st.column_config.TextColumn(width=300),
                "Genres": st.column_config.TextColumn(width=170),
                "Because you rated": st.column_config.TextColumn(help="Your ratings that raise this movie's score most"),
                **score_column(model.explicit),
            },
            width="stretch",
            height=min(38 + 35 * len(recommendations), 740),
        )
        if recommendations[0].exact_reasons:
            how = "Reasons are exact: each of your ratings' share of the score, as the model computes it. "
        else:
            how = "Reasons are estimated by leaving each of your ratings out in turn and re-scoring. "
        scale = "Predicted ratings are on the dataset's scale." if model.explicit else "Scores rank movies; they are not ratings."
        st.caption(how + scale)

# --- two models side by side --------------------------------------------------------------------------------
with side_by_side:
    options = runs.comparison_choices(choice)
    if not options:
        st.info(
            "There is only one trained model for this dataset so far. Train another model or configuration "
            "(say, a different embedding size) in the training monitor, then compare it here.",
            icon="ℹ️",
        )
        st.page_link("app_pages/training_monitor.py", label="Training monitor", icon=":material/monitoring:")
    else:
        other_choice = st.selectbox("Compare with", options, format_func=runs.describe_choice, key="rec-compare-model")
        other = cached.model(other_choice)
        list_a, list_b, overlap_items, jaccard = compare_models(model, other, catalogue, profile.ratings, k=10, filters=filters)
        shared = set(overlap_items)
        st.metric(
            "In both top-10 lists", f"{len(shared)} of {max(len(list_a), len(list_b))}", f"Jaccard {jaccard:.2f}",
            delta_color="off", delta_arrow="off", help="Jaccard: shared movies divided by all movies in either list",
        )
        sides = ((runs.describe_choice(choice), list_a, model), (runs.describe_choice(other_choice), list_b, other))
        for column, (label, chosen, fitted) in zip(st.columns(2), sides, strict=True):
            frame = recommendation_frame(chosen, fitted.explicit).drop(columns=["Because you rated", "Genres"])
            colours = [SHARED_ROW if rec.item_idx in shared else "" for rec in chosen]
            column.markdown(f"**{widgets.md(label)}**")
            column.dataframe(
                frame.style.apply(lambda _, colours=colours: colours, axis=0), width="stretch", column_config=score_column(fitted.explicit)
            )
        st.caption("Highlighted: movies both models recommend.")
