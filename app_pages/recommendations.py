"""Recommendations: the top movies for your profile, why each one, and how two models differ."""

import pandas as pd
import streamlit as st

from recengine.data.dataset import parse_title
from recengine.onboarding import GOOD_PROFILE_SIZE
from recengine.recommend import (
    DEFAULT_MIN_RATINGS,
    DEFAULT_NOVELTY,
    NOVELTY_RANGE,
    WATCH_NEXT_RECENT,
    Recommendation,
    RecommendationFilter,
    compare_models,
    generic_overlap,
    popularity_overlap,
    profile_is_thin,
    recommend_profile,
    watch_next,
)
from ui import cached, runs, state, widgets

REASONS_SHOWN = 3
#: The thin-profile flag looks at the top of the list: this many movies.
THIN_TOP = 10
#: The next-item model of the "Watch next" tab, when registered (else the first sequential one).
WATCH_NEXT_MODEL = "seq-transformer"
#: Next-item models learn from every user's time-ordered history but its last movie (held out for
#: their test figures); a random split would punch holes in the sequences they learn from.
WATCH_NEXT_SPLIT = "last"
HISTORY_SHOWN = 5
FOLLOWS_SHOWN = 2
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


def remember_hide_choice() -> None:
    """The switch's new position goes to the profile, which the preview and the map read too."""
    profile.hide_not_seen = bool(st.session_state["rec-hide-passed"])


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
    passed_over = len(profile.not_seen)
    st.session_state["rec-hide-passed"] = profile.hide_not_seen  # the profile holds the choice, for every page
    st.toggle(
        "Hide movies you passed over", key="rec-hide-passed", on_change=remember_hide_choice,
        help=f"{passed_over} so far: the movies you marked “Not seen” on Rate movies, or left unrated when they were "
        "offered. You either saw them or know of them and have not watched them; either way they make weak "
        "recommendations. Off, they are listed, ranked by your other answers (here, in the Rate movies preview "
        "and on the latent map)",
    )
    hide_passed = profile.hide_not_seen
filters = RecommendationFilter(
    genres=tuple(genres),
    year_range=None if tuple(year_range) == (first_year, last_year) else tuple(year_range),
    min_ratings=int(min_ratings),
)


# --- the three views -------------------------------------------------------------------------------------
def show_thin_profile_flag(recommendations: list[Recommendation]) -> None:
    """The honest flag: say so when the list shown cannot be personal yet."""
    shown = [rec.item_idx for rec in recommendations]
    # what the same settings show someone with no ratings; a profile under GOOD_PROFILE_SIZE is thin whatever the lists
    anyone = [] if len(profile.ratings) < GOOD_PROFILE_SIZE else [
        rec.item_idx
        for rec in recommend_profile(
            model, catalogue, {}, k=THIN_TOP + len(profile.ratings), filters=filters, novelty=novelty, diversity=diversity, explain=False
        )
    ]
    if not profile_is_thin(shown, anyone, profile.ratings, train, k=THIN_TOP):
        return
    overlap = popularity_overlap(shown, profile.ratings, train, k=THIN_TOP)
    if len(profile.ratings) < GOOD_PROFILE_SIZE:
        st.warning(
            f"Your profile is still thin: {len(profile.ratings)} of about {GOOD_PROFILE_SIZE} ratings. Until then the list "
            f"leans on what is popular ({overlap:.0%} of your top 10 are among the 10 most-watched movies).",
            icon="🌱",
        )
    else:
        generic = generic_overlap(shown, anyone, profile.ratings, k=THIN_TOP)
        what = (
            f"mostly popularity: {overlap:.0%} of your top 10 are among the 10 most-watched movies"
            if overlap >= generic
            else f"mostly what anyone gets: {generic:.0%} of your top 10 are on the list for someone with no ratings"
        )
        st.warning(f"This list is {what}. Rating a few less mainstream movies you liked makes it personal.", icon="🌱")


def show_for_you() -> None:
    """The top movies for the profile from the sidebar's model, with the ratings behind each."""
    recommendations = recommend_profile(
        model, catalogue, profile.ratings, k=int(k), filters=filters, novelty=novelty, diversity=diversity,
        not_seen=profile.not_seen, hide_not_seen=hide_passed,
    )
    show_thin_profile_flag(recommendations)
    if not recommendations:
        st.info("No movie passes these filters. Widen the years or genres, or lower the minimum number of ratings.", icon="🔎")
        return
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
    order = (
        " The order weighs the model's score together with what people who gave your answers went on to watch: "
        "the movies you rated, and those you passed over"
        + (f" (the {passed_over} you passed over are hidden)." if hide_passed and passed_over else ".")
    )
    st.caption(how + scale + order)


def follows_text(rec: Recommendation) -> str:
    """ "follows Alien, Aliens": the recent movies that raise this one's chance of coming next most."""
    raising = [reason for reason in rec.reasons if reason.contribution > 0][:FOLLOWS_SHOWN]
    if not raising:
        return "a common next pick, whatever you watched last"
    return "follows " + ", ".join(parse_title(reason.title)[0] for reason in raising)


def watch_next_frame(picks: list[Recommendation]) -> pd.DataFrame:
    """One row per next-movie pick, numbered from 1, for st.dataframe (chance in percent)."""
    return pd.DataFrame(
        {
            "Title": [parse_title(rec.title)[0] for rec in picks],
            "Year": [rec.year for rec in picks],
            "Genres": [" · ".join(rec.genres) for rec in picks],
            "Chance": [100.0 * rec.score for rec in picks],
            "Why": [follows_text(rec) for rec in picks],
        },
        index=pd.RangeIndex(1, len(picks) + 1, name="#"),
    )


def show_watch_next() -> None:
    """What a next-item model expects you to watch next, reading your ratings in the order you gave them."""
    sequential = cached.sequential_models()
    if not sequential:
        st.info("No next-item model is registered, so there is no watch-next list.", icon="ℹ️")
        return
    if len(sequential) > 1:
        default = sequential.index(WATCH_NEXT_MODEL) if WATCH_NEXT_MODEL in sequential else 0
        name = st.segmented_control(
            "Next-item model", sequential, default=sequential[default], key="rec-next-model",
            help="Models that read your movies as a sequence and predict the next one",
        ) or sequential[default]
    else:
        name = sequential[0]
    next_choice = state.ModelChoice(choice.dataset, name, WATCH_NEXT_SPLIT, state.APP_SEED, state.app_hyper(name))
    next_model = cached.model(next_choice)
    picks = watch_next(next_model, catalogue, profile.ratings, k=int(k), filters=filters)
    history = [catalogue["display_title"].iat[item] for item in list(profile.ratings)[-HISTORY_SHOWN:]]
    earlier = "… → " if len(profile.ratings) > HISTORY_SHOWN else ""
    st.markdown(f"**Your movies in the order you rated them:** {widgets.md(earlier + ' → '.join(history))} *(latest)*")
    if not picks:
        st.info("No movie passes these filters. Widen the years or genres, or lower the minimum number of ratings.", icon="🔎")
        return
    st.dataframe(
        watch_next_frame(picks),
        column_config={
            "Title": st.column_config.TextColumn(width=240),
            "Year": st.column_config.NumberColumn(format="%d", width=60),
            "Genres": st.column_config.TextColumn(width=170),
            "Chance": st.column_config.NumberColumn(
                format="%.1f%%", width="small",
                help="The model's chance that this is your next movie, among all you have not rated",
            ),
            "Why": st.column_config.TextColumn(
                help=f"Of your {WATCH_NEXT_RECENT} latest ratings, those without which this movie's chance would drop most"
            ),
        },
        width="stretch",
        height=min(38 + 35 * len(picks), 740),
    )
    st.caption(
        f"**{name}** reads your latest movies as a sequence (the order you rated them stands for the order you "
        "watched them) and predicts the next one: what counts is which movies and in which order, not the stars. "
        "It learned from every user's history but their latest movie. Reasons: each of your latest movies left "
        "out in turn, and the list re-scored."
    )


def show_comparison() -> None:
    """Two models' top 10 side by side, with the movies both recommend highlighted."""
    options = runs.comparison_choices(choice)
    if not options:
        st.info(
            "There is only one trained model for this dataset so far. Train another model or configuration "
            "(say, a different embedding size) in the training monitor, then compare it here.",
            icon="ℹ️",
        )
        st.page_link("app_pages/training_monitor.py", label="Training monitor", icon=":material/monitoring:")
        return
    other_choice = st.selectbox("Compare with", options, format_func=runs.describe_choice, key="rec-compare-model")
    other = cached.model(other_choice)
    list_a, list_b, overlap_items, jaccard = compare_models(
        model, other, catalogue, profile.ratings, k=10, filters=filters, not_seen=profile.not_seen, hide_not_seen=hide_passed
    )
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


# Only the open tab runs (`on_change="rerun"`): the others may need a model trained first.
views = st.tabs(["For you", "Watch next", "Compare two models"], key="rec-view", on_change="rerun")
for tab, show in zip(views, (show_for_you, show_watch_next, show_comparison), strict=True):
    if tab.open:
        with tab:
            show()
