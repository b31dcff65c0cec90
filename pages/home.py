"""Home: what M1, M2 and M1+M2 are, their objectives, the model in use, and where to go next."""

from __future__ import annotations

import numpy as np
import streamlit as st

from pages import _ui
from ssvae_core import generate


def formula(tex: str) -> None:
    """Show a display-style formula, centred, that wraps at its operators when its column is narrow (st.latex
    would clip it instead)."""
    st.markdown(f"$\\displaystyle {tex}$", text_alignment="center")


_ui.header("Semi-supervised deep generative models",
           "An interactive companion to Kingma, Rezende, Mohamed & Welling (NeurIPS 2014), *Semi-supervised "
           "learning with deep generative models*: train the paper's models with a handful of labels, then play "
           "with what they learned.")

left, right = st.columns([3, 2], gap="large")
with left:
    st.markdown(
        "With only **100 labelled digits** and 50,000 unlabelled ones, a deep generative model can classify "
        "MNIST with a few percent error. The trick: model how images are *generated* from a class **y** and a "
        "continuous *style* **z**, and treat the label of an unlabelled image as a latent variable to infer.")
    row = _ui.active_row()
    _ui.fallback_note()
    with st.container(border=True):
        if row is None:
            st.markdown("#### No model yet: train one")
            st.write("No trained M2 or M1+M2 model was found under "
                     f"`{_ui.checkpoint_root()}/`. The Train page trains one in the background; the offline "
                     "*digits* dataset is small and needs no download.")
            st.page_link("pages/train.py", label="Train a model", icon=":material/model_training:")
        else:
            st.markdown("**Model in use**")
            c1, c2, c3, c4 = st.columns(4)
            c1.metric("Model", _ui.MODEL_NAMES[row["model"]])
            c2.metric("Dataset", _ui.SHORT_DATASET.get(row["dataset"], row["dataset"]))
            c3.metric("Labels N", f"{row['labels']:,}")
            err = row.get("test_error")
            c4.metric("Test error", f"{err:.2f}%" if isinstance(err, int | float) else "–")
            st.caption(f"Run folder `{row['path']}` · change it on the Style explorer or Analogies page.")

with right:
    if row is None:
        with st.container(border=True):
            st.markdown("**Quick start**")
            st.markdown("1. **Train** → dataset *Digits · 8×8*, model M2, N = 100 → *Start training*.\n"
                        "2. Watch the bound terms and the error fall; Stop whenever you like.\n"
                        "3. **Style explorer**: move z, keep y — then keep z and change y.\n"
                        "4. **Analogies**: draw a digit and see it rewritten as every class.")
    else:
        run = _ui.load(row)
        if run is not None:
            zs = np.random.default_rng(7).standard_normal((4, generate.z_dim(run.model)))
            _ui.show_image(generate.class_grid(run.model, zs), width=460)
            st.caption("Samples from the model in use: each row is one style z, each column one class y.")

st.subheader("Three models")
m1, m2, m12 = st.columns(3, gap="medium")
with m1, st.container(border=True, height="stretch"):
    st.markdown("##### M1 · latent-feature model")
    st.write("A variational auto-encoder trained on all images, labelled or not. Its latent means "
             "E[z|x] become features for a small classifier trained on the labelled few.")
    formula(r"{p(\mathbf z)=\mathcal N(\mathbf 0,\mathbf I)},\quad\allowbreak p_\theta(\mathbf x|\mathbf z)")
with m2, st.container(border=True, height="stretch"):
    st.markdown("##### M2 · generative semi-supervised model")
    st.write("Images come from a class y and a style z. For unlabelled images y is a latent variable; the "
             "inference network q(y|x) is the classifier you get at the end.")
    formula(r"{p(y)=\mathrm{Cat}(y|\boldsymbol\pi)},\quad\allowbreak{p(\mathbf z)=\mathcal N(\mathbf 0,\mathbf I)},"
            r"\quad\allowbreak p_\theta(\mathbf x|y,\mathbf z)")
with m12, st.container(border=True, height="stretch"):
    st.markdown("##### M1+M2 · stacked")
    st.write("M2 trained on M1's latent codes z₁ instead of pixels: the best of the paper's models "
             "(3.33% error with 100 labels on MNIST).")
    formula(r"p_\theta(\mathbf x|\mathbf z_1)\,\allowbreak p_\theta(\mathbf z_1|y,\mathbf z_2)\,\allowbreak p(y)\,"
            r"\allowbreak p(\mathbf z_2)")

st.subheader("The objectives")
e1, e2 = st.columns(2, gap="large")
with e1:
    st.caption("Evidence lower bound (M1) and the reparameterisation trick that makes it differentiable")
    formula(r"\log p_\theta(\mathbf x)\ \ge\ \mathbb E_{q_\phi(\mathbf z|\mathbf x)}\!\left[\log p_\theta"
            r"(\mathbf x|\mathbf z)\right]-\mathrm{KL}\!\left[q_\phi(\mathbf z|\mathbf x)\,\|\,p(\mathbf z)\right]")
    formula(r"\mathbf z=\boldsymbol\mu_\phi(\mathbf x)+\boldsymbol\sigma_\phi(\mathbf x)\odot\boldsymbol\epsilon,"
            r"\quad\allowbreak{\boldsymbol\epsilon\sim\mathcal N(\mathbf 0,\mathbf I)}")
    st.caption("Labelled images (x, y): a bound on log p(x, y)")
    formula(r"-\mathcal L(\mathbf x,y)=\mathbb E_{q_\phi(\mathbf z|\mathbf x,y)}\bigl[\log p_\theta"
            r"(\mathbf x|y,\mathbf z)+\log p_\theta(y)+\log p(\mathbf z)-\log q_\phi(\mathbf z|\mathbf x,y)\bigr]")
with e2:
    st.caption("Unlabelled images x: sum over the unknown class, plus the entropy of q(y|x)")
    formula(r"-\mathcal U(\mathbf x)=\sum_y q_\phi(y|\mathbf x)\left(-\mathcal L(\mathbf x,y)\right)"
            r"+\mathcal H\!\left(q_\phi(y|\mathbf x)\right)")
    st.caption("The training objective: both bounds, plus a classification loss so that q(y|x) "
               "also learns from the labels directly (the paper uses α = 0.1·N)")
    formula(r"\mathcal J^{\alpha}=\sum_{(\mathbf x,y)\sim\tilde p_l}\!\mathcal L(\mathbf x,y)"
            r"+\sum_{\mathbf x\sim\tilde p_u}\!\mathcal U(\mathbf x)"
            r"+\alpha\,\mathbb E_{\tilde p_l}\!\left[-\log q_\phi(y|\mathbf x)\right]")

st.subheader("Explore")
links = [
    ("pages/train.py", "Train", ":material/model_training:",
     "Pick a dataset, model and label budget; watch every bound term and the error live."),
    ("pages/style.py", "Style explorer", ":material/tune:",
     "Move the style sliders z and see one digit change; the same style across all classes."),
    ("pages/analogies.py", "Analogies", ":material/compare_arrows:",
     "Take the style of a test image, your upload or your drawing and write every class in it."),
    ("pages/results.py", "Results", ":material/leaderboard:",
     "Your runs beside the paper's Table 1, confusion matrices and the digits that fool the model."),
]
for col, (path, label, icon, text) in zip(st.columns(4, gap="medium"), links, strict=True):
    with col, st.container(border=True, height="stretch"):
        st.page_link(path, label=f"**{label}**", icon=icon)
        st.caption(text)
