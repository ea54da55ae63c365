"""Your profiles: save this session's ratings under a name, continue a saved profile later, and
rename, delete, export, import or share one. Everything is stored by `recengine.profiles`."""

import datetime as dt

import pandas as pd
import streamlit as st

from recengine.profiles import (
    MAX_LINK_RATINGS,
    ProfileError,
    ProfileInfo,
    parse_profile_csv,
    parse_profile_json,
    profile_link,
    profile_to_csv,
    profile_to_json,
)
from ui import cached, saved, state, widgets

#: The largest profile file accepted here (the library refuses more than 2,000,000 characters).
MAX_IMPORT_MB = 2

dataset_name = state.current_dataset()
data = cached.dataset(dataset_name)
profile = state.profile(dataset_name)
db = saved.store()
current = saved.active(dataset_name)


def when(seconds: float) -> str:
    """A timestamp as people read it, in UTC."""
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def slug(name: str) -> str:
    """A safe file name from a profile name ("Ann & Bob!" -> "ann-bob")."""
    kept = "".join(ch if ch.isascii() and ch.isalnum() else "-" for ch in name.lower())
    return "-".join(part for part in kept.split("-") if part)[:40] or "profile"


st.title("Your profiles")
st.caption(
    f"Save your ratings on **{widgets.md(dataset_name)}** under a name and pick them up later, on any visit. "
    "While a saved profile is active, every rating is written as you make it."
)

# --- this session ---------------------------------------------------------------------------------
st.subheader("This session")
rated = f"{len(profile)} {'rating' if len(profile) == 1 else 'ratings'}"
if current is not None:
    st.success(f"You are rating as **{widgets.quoted(current.name, 60)}** ({rated}); each change is saved at once.", icon="💾")
else:
    st.info(f"Your {rated} on {widgets.md(dataset_name)} are not saved yet. Give them a name to keep them.", icon="📝")

with st.form("save-profile", clear_on_submit=True, border=False):
    name_column, button_column = st.columns([3, 1], vertical_alignment="bottom")
    new_name = name_column.text_input(
        "Save as", placeholder="e.g. Alice", key="profile-new-name",
        help="1-80 characters; names are unique per dataset (ignoring case)",
    )
    save_label = "Save a copy" if current is not None else "Save"
    submitted = button_column.form_submit_button(save_label, type="primary", icon=":material/save:")
if submitted:
    try:
        info = saved.save_session_as(new_name, dataset_name)
    except ProfileError as error:
        st.error(f"**Not saved:** {widgets.quoted(error, 200)}", icon="⚠️")
    else:
        st.toast(f"Saved as {info.name}", icon="💾")
        st.rerun()

# --- saved profiles -------------------------------------------------------------------------------
st.subheader(f"Saved profiles on {widgets.md(dataset_name)}")
profiles = db.list_profiles(dataset_name)
if not profiles:
    st.caption("None yet. Save this session above, or import a profile file below.")
else:
    st.dataframe(
        pd.DataFrame(
            {
                "name": [p.name for p in profiles],
                "rated": [p.n_ratings for p in profiles],
                "not seen": [p.n_skipped for p in profiles],
                "last change": [when(p.updated_at) for p in profiles],
                "active": ["✓" if current is not None and p.id == current.id else "" for p in profiles],
            }
        ),
        hide_index=True,
        width="stretch",
    )
    by_id: dict[int, ProfileInfo] = {p.id: p for p in profiles}
    default = list(by_id).index(current.id) if current is not None and current.id in by_id else 0
    chosen_id = st.selectbox(
        "Profile", list(by_id), index=default, key=f"profile-pick-{dataset_name}",
        format_func=lambda pid: f"{by_id[pid].name} · {by_id[pid].n_ratings} rated",
        help="Pick a saved profile to continue, rename, delete, export or share",
    )
    chosen = by_id[chosen_id]
    shown_name = widgets.quoted(chosen.name, 60)

    continue_tab, rename_tab, export_tab, share_tab, delete_tab = st.tabs(["Continue", "Rename", "Export", "Share", "Delete"])
    with continue_tab:
        st.caption("Replace this session's ratings with the saved ones; from then on every rating is saved to it.")
        if st.button(f"Continue as {shown_name}", type="primary", icon=":material/play_arrow:", key="profile-continue",
                     disabled=current is not None and current.id == chosen.id):
            info, missing = saved.continue_profile(chosen.id)
            if missing:
                st.session_state["profile-missing"] = len(missing)
            st.rerun()
        if st.session_state.pop("profile-missing", 0):
            st.warning("Some saved ratings are of movies this dataset no longer has; they were left out.", icon="🧩")

    with rename_tab:
        with st.form("rename-profile", border=False):
            renamed = st.text_input("New name", value=chosen.name, key=f"profile-rename-{chosen.id}")
            do_rename = st.form_submit_button("Rename", icon=":material/edit:")
        if do_rename:
            try:
                db.rename(chosen.id, renamed)
            except ProfileError as error:
                st.error(f"**Not renamed:** {widgets.quoted(error, 200)}", icon="⚠️")
            else:
                st.rerun()

    with export_tab:
        st.caption("Download the ratings to keep them or to import them elsewhere (JSON keeps the 'not seen' marks too).")
        content = db.load(chosen.id)
        titles = saved.titles_of(data)
        with st.container(horizontal=True):
            st.download_button(
                "JSON", profile_to_json(content, titles), file_name=f"{slug(chosen.name)}.json", mime="application/json",
                icon=":material/download:", on_click="ignore", key="profile-export-json",
            )
            st.download_button(
                "CSV", profile_to_csv(content, titles), file_name=f"{slug(chosen.name)}.csv", mime="text/csv",
                icon=":material/download:", on_click="ignore", key="profile-export-csv",
            )

    with share_tab:
        content = db.load(chosen.id)
        if not content.ratings:
            st.caption("Rate something first: a link carries ratings.")
        elif len(content.ratings) > MAX_LINK_RATINGS:
            st.caption(f"A link carries at most {MAX_LINK_RATINGS} ratings; export this profile as a file instead.")
        else:
            st.caption(
                "Anyone opening this address sees recommendations for these ratings in their own session (not saved "
                "there until they save them). Copy it with the button at its right."
            )
            st.code(saved.link_url(profile_link(content), here="profiles", to="recommendations"), language=None, wrap_lines=True)

    with delete_tab:
        confirm_key = f"profile-confirm-delete-{chosen.id}"
        if not st.session_state.get(confirm_key):
            st.button(f"Delete {shown_name}…", icon=":material/delete:", key="profile-delete",
                      on_click=st.session_state.__setitem__, args=(confirm_key, True))
        else:
            st.warning(f"Delete **{shown_name}** and its {chosen.n_ratings} ratings? This cannot be undone.", icon="🗑️")
            with st.container(horizontal=True):
                really = st.button("Yes, delete it", type="primary", key="profile-delete-yes")
                st.button("Cancel", key="profile-delete-no", on_click=st.session_state.pop, args=(confirm_key, None))
            if really:
                st.session_state.pop(confirm_key, None)
                db.delete(chosen.id)
                if current is not None and current.id == chosen.id:
                    profile.listener = None  # the session keeps its ratings, unsaved
                st.rerun()

# --- import ------------------------------------------------------------------------------------------
st.subheader("Import a profile file")
st.caption(
    f"A JSON or CSV file exported here (CSV: columns item_id and rating). It is checked whole before anything "
    f"is saved: every movie must be in {widgets.md(dataset_name)} and every rating on its scale."
)
with st.form("import-profile", clear_on_submit=False, border=False):
    upload = st.file_uploader("Profile file", type=["json", "csv"], key="profile-import-file")
    import_name = st.text_input("Save it as", key="profile-import-name",
                                help="Required for CSV; for JSON, leave empty to keep the name in the file")
    do_import = st.form_submit_button("Import", icon=":material/upload:")
if do_import:
    try:
        if upload is None:
            raise ProfileError("choose a file first")
        raw = upload.getvalue()
        if len(raw) > MAX_IMPORT_MB * 1_000_000:
            raise ProfileError(f"the file is {len(raw) / 1e6:.1f} MB; profile files are at most {MAX_IMPORT_MB} MB")
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ProfileError("the file is not UTF-8 text; export it again from recengine") from None
        label = widgets.quoted(upload.name, 60)
        given = import_name if import_name.strip() else None
        if upload.name.lower().endswith(".csv"):
            if given is None:
                raise ProfileError("a CSV file carries no name: fill in 'Save it as'")
            parsed = parse_profile_csv(text, name=given, dataset_name=dataset_name, dataset=data, source=label)
        else:
            parsed = parse_profile_json(text, dataset=data, name=given, source=label)  # a profile of another dataset is refused
        info = db.import_profile(parsed)
    except ProfileError as error:
        st.error(f"**Nothing imported:** {widgets.quoted(error, 300)}", icon="⚠️")
    else:
        dropped = f" ({parsed.duplicates_dropped} repeated movies: the last rating of each kept)" if parsed.duplicates_dropped else ""
        st.success(f"Imported **{widgets.quoted(info.name, 60)}** with {info.n_ratings} ratings{dropped}. "
                   "Pick it above to continue it.", icon="✅")
