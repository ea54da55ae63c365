"""Training monitor: train any model on demand in the background and watch it learn."""

import streamlit as st

from recengine.data.splits import available_splits
from recengine.models.base import get_model_class
from ui import cached, charts, runs, state
from ui.config_form import config_inputs

JOB_KEY = "monitor-job"  # session state: the slug of the run being watched
BATCH_KEY = "compare-batch"  # session state: slugs of the runs queued by "train every model"
ALL_DATASETS, ALL_SPLITS = "All datasets", "All splits"
SHOWN_TEST_METRICS = ("rmse", "mae", "precision@10", "ndcg@10", "hit@10", "mrr")

store = cached.store()
st.title("Training monitor")
st.caption(
    "Pick a dataset, a model, a split and hyper-parameters, and train. Training runs in the background: "
    "you can keep browsing, and the curves update live."
)

# --- a new run ----------------------------------------------------------------------------------------
with st.container(border=True):
    st.subheader("New run")
    names = [info.name for info in cached.datasets() if info.available]
    current = state.current_dataset()
    dataset_column, model_column, split_column, seed_column = st.columns([2, 2, 2, 1])
    dataset_name = dataset_column.selectbox(
        "Dataset", names, index=names.index(current) if current in names else 0, key="monitor-dataset"
    )
    model_name = model_column.selectbox("Model", cached.models(), index=cached.models().index(state.current_model()), key="monitor-model")
    splits = available_splits(cached.dataset(dataset_name))
    split_name = split_column.selectbox(
        "Split", splits, index=splits.index(state.APP_SPLIT) if state.APP_SPLIT in splits else 0, key="monitor-split"
    )
    split_seed = seed_column.number_input("Split seed", value=state.APP_SEED, step=1, key="monitor-seed")
    model_class = get_model_class(model_name)
    with st.form("monitor-hyper", border=False):
        summary = (model_class.__doc__ or "").strip().split(";")[0].split(". ")[0].rstrip(".")
        st.markdown(f"**Hyper-parameters** of {model_name}" + (f" · {summary}" if summary else ""))
        values = config_inputs(model_class.Config, dict(state.app_hyper(model_name)), key_prefix=f"monitor-{model_name}")
        submitted = st.form_submit_button("Train", type="primary", icon=":material/play_arrow:")
    if submitted:
        try:
            key = cached.make_key(dataset_name, model_name, split_name, int(split_seed), values)
        except ValueError as error:
            st.error(f"**These settings do not work:** {error}", icon="⚠️")
        else:
            store.start_training(key)  # a daemon thread of the store; this script never trains
            st.session_state[JOB_KEY] = key.slug


# --- the run being watched ----------------------------------------------------------------------------
def show_run(slug: str, was_active: bool) -> None:
    """Progress, timings and live curves of one run (a fragment, redrawn every second while it runs)."""
    job = runs.job_by_slug(store, slug)
    if job is None:
        return
    active = job.state in runs.ACTIVE_STATES
    st.subheader("This run")
    st.caption(runs.describe_key(job.key))
    if active:
        progress_column, stop_column = st.columns([5, 1], vertical_alignment="center")
        progress_column.progress(min(max(job.progress, 0.0), 1.0), text=cached.progress_text(job))
        stop_column.button("Stop", icon=":material/stop:", on_click=job.cancel, key="monitor-stop")
    elif job.state == "done" and not job.events:
        st.success("Already trained: the store loaded this model instead of training it again.", icon="✅")
    elif job.state == "done":
        st.success(f"Done in {job.elapsed:.1f} s, evaluated on the test part and saved to the model store.", icon="✅")
    elif job.state == "cancelled":
        st.warning(f"Stopped after {len(job.events)} epochs; nothing was saved.", icon="⏹️")
    else:
        st.error(f"**Training failed:** {job.error}", icon="🛑")
    elapsed, remaining, device, epoch = st.columns(4)
    elapsed.metric("Elapsed", f"{job.elapsed:.1f} s")
    remaining.metric("Remaining", f"~{job.eta_seconds:.0f} s" if active and job.eta_seconds is not None else "–")
    device.metric("Device", cached.device_label())
    last = job.events[-1] if job.events else None
    epoch.metric("Epoch", f"{last.epoch} / {last.epochs}" if last else "–")
    history = runs.job_history(job)
    if history:
        st.plotly_chart(charts.training_curves(history), width="stretch", key="monitor-live-chart")
    if job.state == "done" and job.metrics:
        shown = [name for name in SHOWN_TEST_METRICS if name in job.metrics]
        for column, name in zip(st.columns(len(shown) or 1), shown, strict=False):
            column.metric(f"Test {name}", f"{job.metrics[name]:.4f}")
    if was_active and not active:
        st.rerun(scope="app")  # refresh the table of runs, and stop polling


watched = runs.job_by_slug(store, st.session_state.get(JOB_KEY))
if watched is not None:
    running = watched.state in runs.ACTIVE_STATES
    st.fragment(run_every=1.0 if running else None)(show_run)(watched.key.slug, running)

# --- model comparison ---------------------------------------------------------------------------------------
def show_comparison(was_busy: bool) -> None:
    """Every saved model's test figures side by side, one metric as bars, and a button that trains
    every model with its defaults on the chosen dataset and split (a fragment, redrawn while those run)."""
    st.subheader("Compare models")
    artefacts = store.artefacts()
    available = [info.name for info in cached.datasets() if info.available]
    current = state.current_dataset()
    dataset_options = [ALL_DATASETS, *sorted({info.dataset for info in artefacts} | ({current} & set(available)))]
    filter_columns = st.columns([2, 2, 4], vertical_alignment="bottom")
    picked_dataset = filter_columns[0].selectbox(
        "Dataset", dataset_options, index=dataset_options.index(current) if current in dataset_options else 0,
        key="compare-dataset",
    )
    dataset = None if picked_dataset == ALL_DATASETS else picked_dataset
    seen_splits = {info.split for info in artefacts if dataset is None or info.dataset == dataset}
    split_options = [ALL_SPLITS, *(available_splits(cached.dataset(dataset)) if dataset in available else sorted(seen_splits))]
    picked_split = filter_columns[1].selectbox(
        "Split", split_options, index=split_options.index(state.APP_SPLIT) if state.APP_SPLIT in split_options else 0,
        key="compare-split",
    )
    split = None if picked_split == ALL_SPLITS else picked_split
    table = runs.comparison_table(artefacts, dataset, split)
    present = [name for name, label in runs.COMPARISON_METRICS.items() if table[label].notna().any()]
    if table.empty:
        st.info("No saved model for this choice yet: train them all with the button below.", icon="📊")
    else:
        metric = filter_columns[2].segmented_control(
            "Chart", present, default="ndcg@10" if "ndcg@10" in present else (present or [None])[0], key="compare-metric"
        )
        figures = [*runs.COMPARISON_METRICS.values(), "fit s"]
        shown_columns = [  # a column holding one value says nothing the filters above do not
            column for column in table.columns if column not in ("dataset", "split") or table[column].nunique() > 1
        ]
        st.dataframe(  # a metric that does not apply, or fit seconds not recorded: a blank cell
            runs.comparison_text(table),
            column_order=shown_columns,
            column_config={
                "model": st.column_config.TextColumn(width=130),
                **{label: st.column_config.TextColumn(alignment="right") for label in figures},
                "fit s": st.column_config.TextColumn(alignment="right", help="Seconds of model.fit (blank: not recorded)"),
            },
            hide_index=True,
            width="stretch",
            key="compare-table",
        )
        if metric:
            ranking = runs.metric_ranking(table, metric)
            st.plotly_chart(
                charts.metric_bars(ranking, metric, metric in runs.LOWER_IS_BETTER), width="stretch", key="compare-chart"
            )
        st.caption(
            "Figures on each split's test part, as `benchmarks/accuracy.py` prints them: RMSE and MAE for rating "
            "models only; ranking metrics at 10 with training items excluded (next-item models on the user split: "
            "MRR of each test window's last movie). Blank: does not apply, or not recorded."
        )
    ready = dataset in available and split is not None
    label = f"Train every model with defaults on {dataset} · {split}" if ready else "Train every model with defaults"
    if st.button(
        label, icon=":material/playlist_play:", disabled=not ready, key="compare-train-all",
        help="Queues one background run per model family (one runs at a time); the table fills in as they finish"
        if ready else "Pick one dataset and one split first",
    ):
        jobs = runs.train_every_model(store, dataset, split, state.APP_SEED, cached.models())
        st.session_state[BATCH_KEY] = [job.key.slug for job in jobs]
    jobs = runs.jobs_by_slugs(store, st.session_state.get(BATCH_KEY, []))
    busy = any(job.state in runs.ACTIVE_STATES for job in jobs)
    if jobs:
        (st.info if busy else st.success)(runs.batch_summary(jobs), icon="⏳" if busy else "✅")
    if busy and not was_busy:
        st.rerun()  # start polling
    if was_busy and not busy:
        st.rerun(scope="app")  # refresh the table of runs, and stop polling


batch_busy = any(job.state in runs.ACTIVE_STATES for job in runs.jobs_by_slugs(store, st.session_state.get(BATCH_KEY, [])))
st.fragment(run_every=2.0 if batch_busy else None)(show_comparison)(batch_busy)

# --- past runs ------------------------------------------------------------------------------------------
st.subheader("Past runs")
past = runs.past_runs(store)
if past.table.empty:
    st.info("No runs yet. Train one above; the models the app trains for its pages appear here too.", icon="📈")
else:
    metric_columns = [column for column in past.table.columns if "@" in column or column in ("rmse", "mae", "mrr")]
    visible = ("model", "dataset", "split", "settings", "state", *runs.TABLE_METRICS, "fit s", "on disk", "in memory", "saved at")
    selection = st.dataframe(
        runs.figures_as_text(past.table, {**{column: 4 for column in metric_columns}, "fit s": 1}),
        column_order=[column for column in visible if column in past.table.columns],
        hide_index=True,
        width="stretch",
        on_select="rerun",
        selection_mode="multi-row",
        key="monitor-runs",
    )
    st.caption(
        f"{past.on_disk} trained {'model' if past.on_disk == 1 else 'models'} on disk ({past.disk_bytes / 1e6:.1f} MB in "
        f"`{store.root}`); metrics are on each split's test part. Select runs to compare their curves."
    )
    picked = [past.table.index[row] for row in selection.selection.rows]
    compared = {past.label(slug): past.histories[slug] for slug in picked if past.histories.get(slug)}
    if compared:
        names = ["loss", *dict.fromkeys(name for events in compared.values() for event in events for name in event.metrics)]
        metric = st.segmented_control("Compare", names, default="loss", key="monitor-compare-metric") or "loss"
        st.plotly_chart(charts.compared_runs(compared, metric), width="stretch", key="monitor-compare-chart")
    elif picked:
        st.caption("The selected runs have no per-epoch history.")
