"""Streamlit entry point: page setup, navigation, and a sidebar with the loaded model and any training run."""

from __future__ import annotations

import streamlit as st

from pages import _ui
from ssvae_core import jobs
from ssvae_core.recipes import DATASET_NAMES, MODEL_NAMES

st.set_page_config(page_title="ssvae · semi-supervised VAEs", page_icon="🔢", layout="wide")
_ui.style()

PAGES = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/style.py", title="Style explorer", icon=":material/tune:"),
    st.Page("pages/analogies.py", title="Analogies", icon=":material/compare_arrows:"),
    st.Page("pages/results.py", title="Results", icon=":material/leaderboard:"),
]


def sidebar(slot) -> None:
    """Sidebar summary in `slot`: the model the explorer pages use, and this session's training run."""
    with slot:
        row = _ui.active_row()
        st.caption("MODEL IN USE")
        if row is None:
            st.markdown("No model yet — train one.")
        else:
            st.markdown(f"**{MODEL_NAMES[row['model']]}** on {DATASET_NAMES.get(row['dataset'])}, "
                        f"N = {row['labels']}")
            if isinstance(row.get("test_error"), int | float):
                st.markdown(f"test error **{row['test_error']:.2f}%**")
            st.caption(f"Run: `{_ui.run_param(row['path'])}`")
        running = jobs.active_jobs()
        if running:
            st.caption("TRAINING")
            for job in running:
                cfg = job.cfg
                st.markdown(f"{MODEL_NAMES[cfg.model.kind]} on {DATASET_NAMES.get(cfg.dataset)}, "
                            f"N = {cfg.labels} — running in the background.")
            st.page_link("pages/train.py", label="Watch it", icon=":material/monitoring:")
        st.divider()
        st.caption("Kingma, Rezende, Mohamed & Welling (2014), *Semi-supervised learning with deep generative "
                   "models*, NeurIPS.")


page = st.navigation(PAGES)
# The summary's place is made first (top of the sidebar) but filled after the page has run: a page may change the
# model in use in this very run (a shared link's ?model=..., a page's preferred model, a training run started).
slot = st.sidebar.container()
try:
    page.run()
finally:
    sidebar(slot)
