"""recengine: explore movie recommendations.

Run with `streamlit run app.py`. This file is the frame: page navigation, the sidebar
(dataset, model, device, your profile) and the error boundary around every page. The pages
live in `app_pages/`; everything they compute comes from the `recengine` library.

(The folder is not called `pages/`: Streamlit treats a `pages/` folder next to the entry
point as a legacy multipage app, so on a freshly started server a link straight to a page
would run that page without this frame, and AppTest would do so after the first run.)
"""

import os

# Idle OpenMP threads sleep instead of spinning; must be set before torch loads (see README).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import streamlit as st  # noqa: E402

from ui import cached, saved, state, widgets

st.set_page_config(page_title="recengine", page_icon="🎬", layout="wide", initial_sidebar_state="expanded")

navigation = st.navigation(
    {
        "You": [
            st.Page("app_pages/rate_movies.py", title="Rate movies", icon=":material/star_rate:", default=True),
            st.Page("app_pages/recommendations.py", title="Recommendations", icon=":material/recommend:"),
            st.Page("app_pages/profiles.py", title="Your profiles", icon=":material/account_circle:"),
            st.Page("app_pages/upload.py", title="Your data", icon=":material/upload_file:"),
        ],
        "Explore": [
            st.Page("app_pages/because_you_watched.py", title="Because you watched", icon=":material/movie:"),
            st.Page("app_pages/latent_map.py", title="Latent map", icon=":material/scatter_plot:"),
        ],
        "Models": [
            st.Page("app_pages/training_monitor.py", title="Training monitor", icon=":material/monitoring:"),
        ],
    }
)


def dataset_label(name: str) -> str:
    """How a dataset appears in the picker: its name, and whether it is still to download."""
    info = next((info for info in cached.datasets() if info.name == name), None)
    if info is None or info.available:
        return name
    size = f", {info.download_bytes / 1e6:.0f} MB" if info.download_bytes else ""
    return f"{name} (to download{size})"


def sidebar() -> None:
    """Dataset and model pickers, the device, and the current profile with a reset button."""
    with st.sidebar:
        st.markdown("### 🎬 recengine")
        st.caption("Rate a few movies, get recommendations, and look inside the models that make them.")
        names = [info.name for info in cached.datasets()]
        names += [name for name in ("synthetic",) if name not in names]
        if state.DATASET_KEY not in st.session_state:
            st.session_state[state.DATASET_KEY] = state.initial_dataset()
        if st.session_state[state.DATASET_KEY] not in names:
            names.append(st.session_state[state.DATASET_KEY])
        st.selectbox(
            "Dataset",
            names,
            key=state.DATASET_KEY,
            format_func=dataset_label,
            help="Every MovieLens release found on this machine or downloadable, plus a synthetic one",
        )
        model_names = cached.models()
        if st.session_state.get(state.MODEL_KEY) not in model_names:
            st.session_state[state.MODEL_KEY] = state.DEFAULT_MODEL if state.DEFAULT_MODEL in model_names else model_names[0]
        st.selectbox("Model", model_names, key=state.MODEL_KEY, help="The model family behind every page")
        st.caption(f"Device: **{cached.device_label()}**")

        st.divider()
        profile_box()


def profile_box() -> None:
    """The session's profile: how many rated, whether it is saved (and as what), and a reset."""
    profile = state.profile()
    rated = f"{len(profile)} {'movie' if len(profile) == 1 else 'movies'} rated"
    st.markdown(f"**Your profile** · {rated}")
    info = saved.active()
    if info is not None:
        st.caption(f"Saved as **{widgets.quoted(info.name, 40)}** · {len(profile)} rated · every rating is saved as you make it")
    else:
        st.caption("Not saved — save it on Your profiles")
    problem = saved.write_problem()
    if problem:
        st.warning(problem, icon="💾")
    st.button(
        "Reset profile",
        icon=":material/restart_alt:",
        on_click=profile.reset,
        disabled=not (profile.ratings or profile.skipped or profile.shown),
        help=f"Start over on {state.current_dataset()} (other datasets keep theirs; a saved profile keeps its ratings)",
    )


def shared_link_question() -> None:
    """Ask before a shared link replaces ratings the session already has."""
    pending = saved.pending_link()
    if pending is None:
        return
    data = pending.data
    mine = len(state.profile(data.dataset))
    with st.container(border=True):
        st.markdown(
            f"🔗 **A shared link carries {len(data.ratings)} ratings on {widgets.md(data.dataset)}** "
            f"({widgets.quoted(data.name, 40)}). Load them instead of your {mine} ratings there?"
        )
        with st.container(horizontal=True):
            st.button("Load the shared ratings", type="primary", icon=":material/download_done:", on_click=saved.apply_link)
            st.button("Keep mine", icon=":material/close:", on_click=saved.dismiss_link)


cached.single_threaded_blas()
with widgets.friendly_errors():
    saved.take_shared_link()  # before the sidebar: a link may pick the dataset
    sidebar()
    shared_link_question()
    cached.dataset(state.current_dataset())  # a missing dataset is explained here, once, for every page
    navigation.run()
