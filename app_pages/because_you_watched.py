"""Because you watched: name a movie, see the movies the model places closest to it."""

import hashlib

import streamlit as st

from recengine.recommend import DEFAULT_MIN_RATINGS, RecommendationFilter, similar_to
from ui import cached, charts, state, widgets

choice = state.current_choice()
data = cached.dataset(choice.dataset)
catalogue = data.catalogue

st.title("Because you watched…")
st.caption("Type a movie you liked. Spelling does not need to be right.")
query_column, k_column, count_column = st.columns([4, 1, 1])
query = query_column.text_input("A movie you liked", placeholder="e.g. forest gump", key=f"byw-query-{choice.dataset}")
k = k_column.number_input("How many", min_value=3, max_value=50, value=10, key="byw-k")
min_ratings = count_column.number_input(
    "At least … ratings", min_value=0, value=DEFAULT_MIN_RATINGS, step=10, key="byw-min-ratings",
    help="A movie rated by a handful of people has a position in taste space set by those few: "
    "its similarities are noise",
)

if not query.strip():
    popular = catalogue.nlargest(5, "popularity")["display_title"].tolist()
    st.info("For example: " + " · ".join(widgets.md(title) for title in popular), icon="🎬")
    st.stop()

match, candidates, ambiguous = cached.title_search(choice.dataset).resolve(query)
if not candidates:
    st.warning(f"No title looks like “{widgets.quoted(query)}”. Try fewer words, or the original title.", icon="🔎")
    st.stop()

if ambiguous or match is None:
    by_item = {candidate.item_idx: candidate for candidate in candidates}
    query_id = hashlib.sha1(query.strip().lower().encode(), usedforsecurity=False).hexdigest()[:12]  # short, any text
    picked = st.radio(
        "Did you mean…",
        list(by_item),
        format_func=lambda item: by_item[item].title,
        key=f"byw-pick-{choice.dataset}-{query_id}",
    )
    chosen = by_item[picked]
else:
    chosen = match

model = cached.model(choice)
row = catalogue.iloc[chosen.item_idx]
st.subheader(f"Because you watched {widgets.md(chosen.title)}")
st.caption(widgets.movie_caption(row))

similar = similar_to(model, chosen.item_idx, int(k), catalogue=catalogue, filters=RecommendationFilter(min_ratings=int(min_ratings)))
if not similar:
    st.info("No other movie has that many ratings. Lower “At least … ratings”.", icon="🔎")
    st.stop()
st.plotly_chart(charts.similarity_bars(similar), width="stretch", config={"displayModeBar": False})

st.markdown("**Seen any of them? Rate them** (adds to your profile)")
# Two cards a row fit a 1..5 scale's nine rating buttons; a 0.5..5 scale's ten would wrap there.
cards = st.columns(2 if len(widgets.rating_choices(data.rating_scale)) <= 9 else 1)
for position, (item, _, score) in enumerate(similar):
    with cards[position % len(cards)]:
        key = f"byw-rate-{choice.dataset}-{item}"
        widgets.movie_card(item, catalogue, key=key, scale=data.rating_scale, dataset=choice.dataset, note=f"similarity {score:.2f}")
