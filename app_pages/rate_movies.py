"""Rate movies: a newcomer rates a few well-chosen movies and watches recommendations take shape."""

import streamlit as st

from recengine.onboarding import BATCH_SIZE, GOOD_PROFILE_SIZE, next_questions, progress_message
from recengine.recommend import RecommendationFilter, recommend_profile
from ui import cached, state, widgets

PREVIEW_SIZE = 8
SEARCH_RESULTS = 6
#: The live preview leaves out movies rated by fewer people (their predictions are noisy).
PREVIEW_MIN_RATINGS = 20

choice = state.current_choice()
data = cached.dataset(choice.dataset)
catalogue = data.catalogue
profile = state.profile(choice.dataset)

st.title("Rate movies")
st.caption(
    "Tell us about movies you have seen. After each batch we ask about movies people with your answers "
    "have likely seen, each saying something different about taste; your recommendations update with "
    "every rating, without retraining."
)
model = cached.model(choice)
order = cached.onboarding_order(choice)


def plan_batch(not_seen: set[int]) -> None:
    """The next questions, adapted to the answers so far (the fixed order's head before any)."""
    profile.batch[:] = next_questions(model, profile.ratings, not_seen, BATCH_SIZE, first=order).tolist()


def show_next_batch() -> None:
    """Move on: what was on screen and left unrated counts as not seen and is not offered again."""
    profile.shown.update(profile.batch)
    plan_batch(profile.not_seen)


def start_over_batches() -> None:
    profile.shown.clear()
    plan_batch(profile.skipped)


if not profile.batch:
    plan_batch(profile.not_seen)

n_rated = len(profile.ratings)
st.progress(min(n_rated / GOOD_PROFILE_SIZE, 1.0), text=progress_message(n_rated))

ask, preview = st.columns([3, 2], gap="large")

with ask:
    st.subheader("Have you seen these?")
    if not profile.batch:
        st.info("You have answered every movie we ask about. Search for any other movie below.", icon="🎉")
        st.button("Show the ones I left unrated again", on_click=start_over_batches)
    for item in profile.batch:
        row = catalogue.iloc[item]
        with st.container(border=True):
            title_column, skip_column = st.columns([4, 1], vertical_alignment="top")
            title_column.markdown(f"**{widgets.md(row['display_title'])}**  \n:gray[{widgets.movie_caption(row)}]")
            if item in profile.skipped:
                skip_column.button(
                    "Seen it", key=f"unskip-{item}", on_click=profile.unskip, args=(item,),
                    type="tertiary", icon=":material/undo:",
                )
                st.caption("Marked as not seen: it is left off your recommendations (a switch there lists it again).")
            else:
                skip_column.button(
                    "Not seen", key=f"skip-{item}", on_click=profile.skip, args=(item,),
                    type="tertiary", icon=":material/visibility_off:", help="Haven't seen it: skip this one (it also stays off your recommendations)",
                )
                widgets.rating_control(item, key=f"batch-{choice.dataset}-{item}", scale=data.rating_scale, dataset=choice.dataset)
    if profile.batch:
        st.button(
            "Next batch", type="primary", icon=":material/arrow_forward:", on_click=show_next_batch,
            help="Movies of this batch you leave unrated count as not seen",
        )

    st.subheader("Rate any movie")
    query = st.text_input("Search by title", placeholder="e.g. forest gump, star wars 1977", key=f"rate-search-{choice.dataset}")
    if query.strip():
        matches = cached.title_search(choice.dataset).search(query, limit=SEARCH_RESULTS)
        if not matches:
            st.caption(f"No title looks like “{widgets.quoted(query)}”. Try fewer words or another spelling.")
        for match in matches:
            key = f"search-{choice.dataset}-{match.item_idx}"
            widgets.movie_card(match.item_idx, catalogue, key=key, scale=data.rating_scale, dataset=choice.dataset)

with preview:
    st.subheader("Your recommendations so far")
    if not profile.ratings:
        st.info("Rate a movie and your first recommendations appear here.", icon="⭐")
    else:
        preview_filter = RecommendationFilter(min_ratings=PREVIEW_MIN_RATINGS)
        recommendations = recommend_profile(
            model, catalogue, profile.ratings, k=PREVIEW_SIZE, filters=preview_filter, not_seen=profile.not_seen,
            hide_not_seen=profile.hide_not_seen,
        )
        for rank, rec in enumerate(recommendations, start=1):
            top = rec.reasons[0] if rec.reasons and rec.reasons[0].contribution > 0 else None
            because = f" · because you rated {widgets.md(top.title)} {widgets.stars(top.rating)}" if top else ""
            predicted = f"{rec.predicted_rating:.1f}★" if rec.predicted_rating is not None else f"score {rec.score:.2f}"
            st.markdown(f"{rank}. **{widgets.md(rec.title)}** · {predicted}  \n:gray[{widgets.genre_text(rec.genres, limit=2)}{because}]")
        st.page_link("app_pages/recommendations.py", label="All recommendations, filters and reasons", icon=":material/recommend:")

    with st.expander(f"Your ratings ({n_rated})", expanded=0 < n_rated <= GOOD_PROFILE_SIZE):
        if not profile.ratings:
            st.caption("Nothing rated yet.")
        titles = catalogue["display_title"].to_numpy()
        for item, rating in sorted(profile.ratings.items(), key=lambda pair: (-pair[1], titles[pair[0]])):
            title_column, remove_column = st.columns([5, 1], vertical_alignment="center")
            title_column.markdown(f"{widgets.stars(rating)} {widgets.md(titles[item])}")
            remove_column.button(
                "", key=f"remove-{choice.dataset}-{item}", icon=":material/close:", on_click=profile.unrate, args=(item,),
                help="Remove this rating", type="tertiary",
            )
