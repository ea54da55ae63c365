"""Your data: upload a ratings file (and optionally an items file) and use it like a MovieLens
dataset on every page. Parsing, validation and storage are `recengine.data.upload`'s."""

import re

import pandas as pd
import streamlit as st

from recengine.data import upload
from ui import saved, state, widgets

#: Scales offered besides guessing (the guess covers 1-5 whole stars and 0.5-5 half stars).
SCALES = {"Guess (1-5 or 0.5-5)": None, "1 to 5": (1.0, 5.0), "0.5 to 5": (0.5, 5.0), "1 to 10": (1.0, 10.0),
          "0.5 to 10": (0.5, 10.0), "0 to 10": (0.0, 10.0)}  # fmt: skip
ENCODINGS = ["auto", "latin-1", "cp1252"]
ROLES = {"user": "User id", "item": "Item id", "rating": "Rating", "timestamp": "Timestamp (optional)"}
NOT_USED = "— not used —"
IMPORTED_KEY = "upload-imported"


def suggested_name(filename: str) -> str:
    """An upload name from a file name: "My Ratings (2).csv" -> "my-ratings-2"."""
    stem = filename.rsplit(".", 1)[0].lower()
    return re.sub(r"[^a-z0-9]+", "-", stem).strip("-")[:64] or "my-ratings"


def show_problems(error: upload.UploadError) -> None:
    """The refusal and every problem as a table naming file, row and column."""
    count = len(error.problems)
    st.error(f"**Refused, nothing imported:** {count} {'problem' if count == 1 else 'problems'} to fix in the file.", icon="🚫")
    st.dataframe(saved.problems_table(error), hide_index=True, width="stretch")
    st.caption("Fix the file and upload it again, or change the encoding, columns or rating scale here: it is checked again at once.")


st.title("Your data")
st.caption(
    "Bring your own ratings: a CSV or TSV file with a user id, an item id and a rating per row (a timestamp is "
    "optional). Once imported it is a dataset like the MovieLens ones: pick it in the sidebar and every page works on it."
)

imported = st.session_state.pop(IMPORTED_KEY, None)
if imported is not None:
    with st.container(horizontal=True, vertical_alignment="center"):
        st.success(f"Imported **{imported}**: it is in the sidebar's Dataset list now.", icon="🎉")
        st.button(f"Switch to {imported} now", icon=":material/swap_horiz:", on_click=widgets.use_dataset, args=(imported,))

ratings_file = st.file_uploader("Ratings file", type=["csv", "tsv", "txt", "dat"], key="upload-ratings",
                                help=f"Up to {upload.UploadLimits().max_bytes // 2**20} MB and {upload.UploadLimits().max_rows:,} rows")
items_file = st.file_uploader("Items file (optional)", type=["csv", "tsv", "txt", "dat"], key="upload-items",
                              help="Item id and title per row, optionally genres ('Action|Comedy') and year")

if ratings_file is not None:
    raw = ratings_file.getvalue()
    filename = ratings_file.name
    encoding = st.selectbox("Encoding", ENCODINGS, key="upload-encoding",
                            help="'auto' reads UTF-8; choose latin-1 for older files (such as MovieLens 100K)")
    try:
        preview = saved.preview_upload(raw, filename, encoding)
    except upload.UploadError as error:
        show_problems(error)
        st.stop()

    st.subheader("Columns")
    st.caption("Guessed from the header (or the column order); change any that is wrong.")
    options = [NOT_USED, *preview.columns]
    columns = st.columns(len(ROLES))
    mapping: dict[str, str] = {}
    for column, (role, label) in zip(columns, ROLES.items()):
        guess = preview.guessed.get(role)
        picked = column.selectbox(label, options, index=options.index(guess) if guess in options else 0,
                                  key=f"upload-column-{role}-{filename}")
        if picked != NOT_USED:
            mapping[role] = picked
    scale_name = st.selectbox("Rating scale", list(SCALES), key="upload-scale",
                         help="Ratings outside the scale are refused; declare it when your ratings are not 1-5 or 0.5-5")

    st.subheader("Preview")
    st.caption(f"The first rows of {widgets.quoted(filename, 60)} as read (row numbers as in the file, the header is row 1).")
    st.dataframe(preview.rows, width="stretch")

    missing = [ROLES[role] for role in ("user", "item", "rating") if role not in mapping]
    try:
        if missing:
            raise upload.UploadError(f"choose a column for {', '.join(missing)}", filename)
        parsed = saved.parse_upload(
            raw, filename, tuple(sorted(mapping.items())), SCALES[scale_name], encoding,
            items_file.getvalue() if items_file is not None else None, items_file.name if items_file is not None else None,
        )
    except upload.UploadError as error:
        show_problems(error)
        st.stop()

    st.success(widgets.md(parsed.report.summary()), icon="✅")
    with st.form("upload-import", border=False):
        name_column, button_column = st.columns([3, 1], vertical_alignment="bottom")
        name = name_column.text_input("Dataset name", value=suggested_name(filename), key=f"upload-name-{filename}",
                                      help="1-64 lowercase letters, digits, '-' or '_'; shown in the sidebar's dataset picker")
        do_import = button_column.form_submit_button("Import", type="primary", icon=":material/upload:")
    if do_import:
        try:
            info = upload.save_upload(parsed, name)
        except ValueError as error:  # UploadError (name taken) or a bad name
            st.error(f"**Not imported:** {widgets.quoted(error, 300)}", icon="⚠️")
        else:
            saved.refresh_datasets()
            st.session_state[IMPORTED_KEY] = info.name
            st.rerun()  # so the sidebar's dataset picker lists it

st.subheader("Your uploads")
uploads = upload.list_uploads()
if not uploads:
    st.caption("None yet.")
else:
    st.dataframe(
        pd.DataFrame(
            {
                "name": [u.name for u in uploads],
                "ratings": [u.n_ratings for u in uploads],
                "users": [u.n_users for u in uploads],
                "items": [u.n_items for u in uploads],
                "scale": [f"{u.rating_scale[0]:g}-{u.rating_scale[1]:g}" for u in uploads],
                "imported": [u.created_at for u in uploads],
                "from": [u.source for u in uploads],
            }
        ),
        hide_index=True,
        width="stretch",
    )
    doomed = st.selectbox("Delete an upload", [u.name for u in uploads], index=None, placeholder="Choose one to delete…",
                          key="upload-delete-pick")
    if doomed is not None:
        st.warning(f"Delete **{doomed}**? Its models stay until retrained; the file you uploaded is not needed again.", icon="🗑️")
        if st.button(f"Yes, delete {doomed}", type="primary", key="upload-delete-yes"):
            if state.current_dataset() == doomed:
                st.error("This is the dataset in use: pick another one in the sidebar first.", icon="⚠️")
            else:
                upload.delete_upload(doomed)
                saved.refresh_datasets()
                del st.session_state["upload-delete-pick"]
                st.rerun()
