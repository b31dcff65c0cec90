"""Streamlit AppTest checks: every page renders (with and without checkpoints), Train starts and stops a run,
sliders change the image, analogies have K columns, bad uploads show an error."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from streamlit.testing.v1 import AppTest

from ssvae_core import jobs, measured
from ssvae_core.checkpoints import read_meta, save_trainer
from ssvae_core.classifiers import CLASSIFIERS
from ssvae_core.data import load_dataset
from ssvae_core.models import ModelConfig
from ssvae_core.recipes import CLASSIFIER_NAMES, SHIPPED_CLUSTERS, SHIPPED_M1, recipe_settings
from ssvae_core.train import TrainConfig, Trainer
from tests.conftest import ROOT

APP = str(Path(__file__).resolve().parents[1] / "app.py")
PAGES = ["pages/home.py", "pages/train.py", "pages/style.py", "pages/analogies.py", "pages/results.py"]


def tiny_run(root: Path, z_dim: int = 2, name: str = "m2-digits") -> Path:
    """Train a digits M2 for one epoch and save it under `root`."""
    cfg = TrainConfig(model=ModelConfig(kind="m2", hidden=[32], z_dim=z_dim), dataset="digits", labels=100,
                      epochs=1, batch_size=300, lr=1e-3, device="cpu")
    trainer = Trainer(cfg, load_dataset("digits"))
    list(trainer.epochs())
    return save_trainer(trainer, root / name)


@pytest.fixture(scope="module")
def ckpt_root(tmp_path_factory) -> Path:
    """A checkpoint folder with one tiny 2-D-z digits run, one 12-D one, and one broken folder."""
    root = tmp_path_factory.mktemp("checkpoints")
    tiny_run(root, 12, "m2-digits-z12")
    tiny_run(root, 2, "m2-digits-z2")
    broken = root / "broken-run"
    broken.mkdir()
    (broken / "run.json").write_text("{not json")
    return root


@pytest.fixture(autouse=True)
def no_jobs_left() -> Iterator[None]:
    """Stop any background run a test leaves behind."""
    yield
    for job in jobs.active_jobs():
        job.stop()
        job.join(60)
    with jobs._LOCK:
        jobs._JOBS.clear()


def app(monkeypatch, root: Path) -> AppTest:
    """The app with its checkpoint root at `root`, run once."""
    monkeypatch.setenv("SSVAE_CHECKPOINTS", str(root))
    at = AppTest.from_file(APP, default_timeout=60)
    return at.run()


def assert_clean(at: AppTest, page: str) -> None:
    """No exception on the page."""
    assert not at.exception, f"{page}: {[e.value for e in at.exception]}"


def test_pages_render_without_checkpoints(monkeypatch, tmp_path):
    at = app(monkeypatch, tmp_path / "empty")
    assert any("No model yet" in m.value for m in at.markdown)
    for page in PAGES:
        at.switch_page(page).run()
        assert_clean(at, page)
    at.switch_page("pages/style.py").run()
    assert any("No model yet: train one" in m.value for m in at.markdown)
    at.switch_page("pages/analogies.py").run()
    assert any("No model yet: train one" in m.value for m in at.markdown)
    at.switch_page("pages/results.py").run()
    assert any("No saved runs" in i.value for i in at.info)


def test_pages_render_with_runs(monkeypatch, ckpt_root):
    at = app(monkeypatch, ckpt_root)
    assert [m.label for m in at.metric][:4] == ["Model", "Dataset", "Labels N", "Test error"]
    for page in PAGES:
        at.switch_page(page).run()
        assert_clean(at, page)
    at.switch_page("pages/results.py").run()
    table = at.dataframe[0].value
    assert len(table) == 3 and (table["status"] == "⚠ broken").sum() == 1
    assert "Saved runs" in [h.value for h in at.subheader]


def test_style_slider_changes_image(monkeypatch, ckpt_root):
    at = app(monkeypatch, ckpt_root)
    at.switch_page("pages/style.py").run()
    at.selectbox(key="sx_run").set_value(str(ckpt_root / "m2-digits-z12")).run()
    assert_clean(at, "style")
    assert len(at.slider) == 10  # the 10 most active of 12 dimensions
    assert at.slider[0].label.startswith("z") and " · KL " in at.slider[0].label
    before = at.image[0].value[0]
    at.slider[0].set_value(2.5).run()  # the most active unit
    after = at.image[0].value[0]
    assert before != after
    at.toggle(key="sx_all").set_value(True).run()
    assert len(at.slider) == 12
    at.button[0].click().run()  # "Random z"
    assert_clean(at, "style")


def test_latent_map_for_2d_z(monkeypatch, ckpt_root):
    at = app(monkeypatch, ckpt_root)
    at.switch_page("pages/style.py").run()
    at.selectbox(key="sx_run").set_value(str(ckpt_root / "m2-digits-z2")).run()
    assert_clean(at, "style")
    assert any(c.value.startswith("Latent map") for c in at.caption)
    assert [c.key for c in at.get("plotly_chart")] == ["sx_map", "sx_activity"]  # the clickable map, unit activity


def test_analogy_grid_has_k_columns(monkeypatch, ckpt_root):
    at = app(monkeypatch, ckpt_root)
    at.switch_page("pages/analogies.py").run()
    assert_clean(at, "analogies")
    assert at.session_state["an_grid_shape"] == (5, 10)
    assert any("5 inputs × 10 classes" in c.value for c in at.caption)
    assert "Interpolation" in [h.value for h in at.subheader]
    assert any(c.value.startswith("z from row 1's style to row 2's") for c in at.caption)
    at.segmented_control(key="an_src").set_value("samples").run()
    assert_clean(at, "analogies")
    assert at.session_state["an_grid_shape"][1] == 10


def _png() -> bytes:
    """A small black-on-white PNG of a vertical stroke."""
    img = Image.new("L", (64, 64), 255)
    ImageDraw.Draw(img).line([(32, 8), (32, 56)], fill=0, width=8)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_bad_upload_shows_error_and_page_keeps_working(monkeypatch, ckpt_root):
    at = app(monkeypatch, ckpt_root)
    at.switch_page("pages/analogies.py").run()
    at.segmented_control(key="an_src").set_value("upload").run()
    at.file_uploader(key="an_files").upload("notes.txt", b"definitely not an image", "text/plain")
    at.file_uploader(key="an_files").upload("digit.png", _png(), "image/png").run()
    assert_clean(at, "analogies")
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "notes.txt" in errors[0] and "not an image" in errors[0]
    assert at.session_state["an_grid_shape"] == (1, 10)  # the good file still gets its row


def test_train_starts_and_stops(monkeypatch, tmp_path):
    root = tmp_path / "ck"
    at = app(monkeypatch, root)
    at.switch_page("pages/train.py").run()
    assert at.segmented_control(key="tr_model").value == "m1m2"  # the default: the recipe's quickest good model
    at.segmented_control(key="tr_model").set_value("m2").run()
    assert at.number_input(key="tr_epochs").value == recipe_settings("m2", 100)["epochs"]  # follows the model
    at.selectbox(key="tr_dataset").set_value("digits")
    at.number_input(key="tr_epochs").set_value(200)
    at.text_input(key="tr_hidden").set_value("32")
    at.number_input(key="tr_batch").set_value(300)
    at.number_input(key="tr_lr_final").set_value(1e-4)
    at.run()
    start = next(b for b in at.button if b.label == "Start training")
    start.click().run()
    assert_clean(at, "train")
    job = jobs.get_job(at.session_state["tr_job"])
    assert job is not None and job.cfg.dataset == "digits" and job.cfg.lr_final == pytest.approx(1e-4)
    assert (job.cfg.ema, job.cfg.shift) == (recipe_settings("m2", 100)["ema"], 0)  # 8×8 digits: no shift

    def epochs_done() -> int:
        """Rerun the page and read the 'Epochs done' metric."""
        at.run()
        return int(at.metric[0].value.split("/")[0])

    end = time.time() + 90
    while epochs_done() < 2 and time.time() < end:
        time.sleep(0.5)
    assert epochs_done() >= 2  # history grows
    assert at.get("plotly_chart")  # live curves
    at.button(key=f"tr_stop_{job.id}").click().run()
    job.join(60)
    at.run()
    assert_clean(at, "train")
    assert any("Saved the best epoch" in s.value for s in at.success)
    saved = [p for p in root.iterdir() if (p / "model.pt").is_file()]
    assert len(saved) == 1 and saved[0].name.startswith("m2-digits-n100-s0-")
    assert not job.active


def test_train_page_fills_in_each_models_recipe(monkeypatch, tmp_path):
    at = app(monkeypatch, tmp_path / "ck")
    at.switch_page("pages/train.py").run()
    for model in ("m2", "m1m2"):
        at.segmented_control(key="tr_model").set_value(model).run()
        next(b for b in at.button if b.label.startswith("Use the results recipe")).click().run()
        assert_clean(at, "train")
        r = recipe_settings(model, start="scratch")  # the M1 fields count only for a fresh M1: its recipe's
        assert at.number_input(key="tr_epochs").value == r["epochs"]
        assert at.number_input(key="tr_m1_epochs").value == r["m1_epochs"]
        assert at.number_input(key="tr_lr").value == pytest.approx(r["lr"])
        assert at.number_input(key="tr_lr_final").value == pytest.approx(r["lr_final"])
        assert at.text_input(key="tr_hidden").value == ",".join(map(str, r["hidden"]))
        for field in ("kl_warmup", "m1_lr", "m1_lr_final", "m1_kl_warmup"):
            assert at.number_input(key=f"tr_{field}").value == pytest.approx(r[field])
    assert recipe_settings("m2")["hidden"] != recipe_settings("m1m2")["hidden"]  # the switch was seen
    at.number_input(key="tr_labels").set_value(1000).run()  # M1+M2's stage runs longer from N=1000 on
    next(b for b in at.button if b.label.startswith("Use the results recipe")).click().run()
    assert at.number_input(key="tr_epochs").value == recipe_settings("m1m2", 1000)["epochs"] != r["epochs"]
    # on MNIST M1+M2 starts from the shipped M1: its stage's fields are off unless a fresh M1 is asked for
    assert at.number_input(key="tr_m1_epochs").disabled and not at.checkbox(key="tr_fresh_m1").value
    at.checkbox(key="tr_fresh_m1").check().run()
    assert not at.number_input(key="tr_m1_epochs").disabled
    # the filled-in M1 stage reaches the run's config: M1+M2's shared M1 is trained at its own rate and warm-up
    at.selectbox(key="tr_dataset").set_value("digits").run()  # no shipped M1 for digits: the M1 stage trains
    at.number_input(key="tr_epochs").set_value(1)
    at.number_input(key="tr_m1_epochs").set_value(1)
    at.run()
    next(b for b in at.button if b.label == "Start training").click().run()
    assert_clean(at, "train")
    job = jobs.get_job(at.session_state["tr_job"])
    m1 = recipe_settings("m1m2", start="scratch")
    assert (job.cfg.m1_lr, job.cfg.m1_lr_final, job.cfg.m1_kl_warmup) == pytest.approx(
        (m1["m1_lr"], m1["m1_lr_final"], m1["m1_kl_warmup"]))
    assert (job.cfg.ema, job.cfg.alpha) == (m1["ema"], m1["alpha"])  # and the stage from scratch's average, alpha
    assert job.cfg.lr != job.cfg.m1_lr
    job.stop()
    job.join(60)


def test_train_page_starts_m2_with_its_recipe_s_average_and_shift_on_mnist_only(monkeypatch, tmp_path, mnist_root):
    """M2's recipe keeps a moving average and, on MNIST, moves its labelled images; the page says so and starts it
    the way train --recipe does."""
    monkeypatch.setenv("SSVAE_DATA_DIR", str(mnist_root))
    started = []

    def fake_start(cfg, data_root, run_dir, data=None, m1_run=None, resume=False):
        started.append(cfg)
        raise jobs.JobLimitError("not started in this test")

    monkeypatch.setattr(jobs, "start_job", fake_start)
    at = app(monkeypatch, tmp_path / "ck")
    at.switch_page("pages/train.py").run()
    at.segmented_control(key="tr_model").set_value("m2").run()
    assert any("pixels" in c.value for c in at.caption)
    next(b for b in at.button if b.label == "Start training").click().run()
    r = recipe_settings("m2", 100)
    assert (started[-1].ema, started[-1].shift, started[-1].epochs) == (r["ema"], r["shift"], r["epochs"])
    assert r["shift"] > 0 and r["ema"] > 0
    at.selectbox(key="tr_dataset").set_value("digits").run()
    assert not any("pixels" in c.value for c in at.caption)
    next(b for b in at.button if b.label == "Start training").click().run()
    assert len(started) == 2 and started[-1].shift == 0 == recipe_settings("m2", 100, dataset="digits")["shift"]
    assert_clean(at, "train")


def test_train_page_starts_m1m2_from_the_shipped_clusters_when_asked(monkeypatch, tmp_path, mnist_root):
    """Off by default (the recipe's start: the shipped M1); ticked, the run starts from the shipped clusters; with a
    fresh M1 there is nothing to offer."""
    monkeypatch.setenv("SSVAE_DATA_DIR", str(mnist_root))
    started = []

    fields = ("ema", "alpha", "m1_epochs", "m1_kl_warmup")
    settings = []  # what the start decides: the average of weights, alpha, and the M1 fields (the shipped M1's)

    def fake_start(cfg, data_root, run_dir, data=None, m1_run=None, resume=False):
        started.append(m1_run)
        settings.append({k: getattr(cfg, k) for k in fields})
        raise jobs.JobLimitError("not started in this test")

    monkeypatch.setattr(jobs, "start_job", fake_start)
    at = app(monkeypatch, tmp_path / "ck")
    at.switch_page("pages/train.py").run()
    at.segmented_control(key="tr_model").set_value("m1m2").run()
    press = lambda: next(b for b in at.button if b.label == "Start training").click().run()  # noqa: E731
    assert not at.checkbox(key="tr_clusters").value
    press()
    assert not at.number_input(key="tr_z").disabled
    at.checkbox(key="tr_clusters").check().run()
    assert any("shipped clusters" in c.value for c in at.caption)
    assert at.number_input(key="tr_z").disabled and at.text_input(key="tr_hidden").disabled  # the clusters' sizes
    kept = read_meta(ROOT / SHIPPED_CLUSTERS)["config"]["model"]
    assert at.number_input(key="tr_z").label == f"z size (clusters: {kept['z_dim']})"
    assert at.text_input(key="tr_hidden").label.endswith(f"(clusters: {','.join(map(str, kept['hidden']))})")
    press()
    assert started == [SHIPPED_M1, SHIPPED_CLUSTERS]
    assert settings == [{k: recipe_settings("m1m2", 100, start)[k] for k in fields}
                        for start in ("m1", "clusters")]  # as train --recipe: the M1 fields are the shipped M1's
    assert settings[0] != settings[1]  # the recipe from clusters averages the weights, with less alpha
    at.checkbox(key="tr_fresh_m1").check().run()
    assert "tr_clusters" not in [c.key for c in at.checkbox]
    press()
    assert started[-1] is None
    assert_clean(at, "train")


def _refusals(at: AppTest) -> list[str]:
    """The red 'refused' lines the Train form shows."""
    return [m.value for m in at.markdown if m.value.startswith(":red[")]


@pytest.mark.parametrize(("key", "value", "words"), [
    ("tr_epochs", 0, "Epochs must be from 1 to 3,000; 0 is outside that range."),
    ("tr_labels", 15, "N must be a multiple of 10"),
    ("tr_labels", 60000, "N can be at most 45,060"),
    ("tr_batch", 1, "The batch size must be from 10 to 5,000"),
    ("tr_hidden", "abc", "Hidden layer sizes are whole numbers separated by commas"),
])
def test_train_form_refuses_bad_values_before_start(monkeypatch, tmp_path, key, value, words):
    at = app(monkeypatch, tmp_path / "ck")
    at.switch_page("pages/train.py").run()
    at.selectbox(key="tr_dataset").set_value("mnist")
    start = next(b for b in at.button if b.label == "Start training")
    assert not start.disabled and not _refusals(at)
    widget = at.text_input(key=key) if key == "tr_hidden" else at.number_input(key=key)
    widget.set_value(value).run()
    assert_clean(at, "train")
    shown = at.text_input(key=key) if key == "tr_hidden" else at.number_input(key=key)
    assert shown.value == value  # the widget keeps what was typed
    start = next(b for b in at.button if b.label == "Start training")
    assert start.disabled
    assert any(words in r for r in _refusals(at)), _refusals(at)


def _random_weights(run: Path) -> None:
    """Replace a run's weights by random bytes and make run.json's sha256 vouch for them."""
    import hashlib
    import json
    import os

    data = b"\x13" + os.urandom(19999)
    (run / "model.pt").write_bytes(data)
    meta = json.loads((run / "run.json").read_text())
    meta["weights"]["sha256"] = hashlib.sha256(data).hexdigest()
    (run / "run.json").write_text(json.dumps(meta))


def test_broken_runs_are_shown_broken_and_never_used(monkeypatch, ckpt_root, tmp_path):
    import os
    import shutil

    root = tmp_path / "ck"
    shutil.copytree(ckpt_root, root)
    shutil.copytree(root / "m2-digits-z2", root / "m2-digits-random")
    _random_weights(root / "m2-digits-random")
    at = app(monkeypatch, root)
    at.switch_page("pages/results.py").run()
    assert_clean(at, "results")
    table = at.dataframe[0].value.set_index("run")
    assert table.loc["m2-digits-random", "status"] == "⚠ broken"
    assert table.loc["m2-digits-random", "problem"].startswith("model.pt is not a PyTorch weights file")
    assert table.loc["m2-digits-random", "test error %"] != table.loc["m2-digits-random", "test error %"]  # NaN
    assert table.loc["m2-digits-z2", "status"] == "ok"

    at.switch_page("pages/style.py").run()
    assert_clean(at, "style")
    assert not any("m2-digits-random" in o for o in at.selectbox(key="sx_run").options)
    assert any("Left out, broken" in c.value and "m2-digits-random" in c.value for c in at.caption)

    # the picked model breaks later: the default takes its place and the pages say so
    picked = str(root / "m2-digits-z12")
    at.selectbox(key="sx_run").set_value(picked).run()
    assert at.session_state["active_run"] == picked
    (root / "m2-digits-z12" / "model.pt").write_bytes(b"\x13" + os.urandom(2999))
    at.run()
    assert_clean(at, "style")
    assert at.session_state["active_run"] != picked
    assert at.selectbox(key="sx_run").value != picked
    assert any("The model you picked, m2-digits-z12, is broken" in w.value for w in at.warning)
    at.switch_page("pages/home.py").run()
    assert_clean(at, "home")
    assert "m2-digits-z12" not in next(c.value for c in at.caption if c.value.startswith("Run folder"))


def test_style_view_round_trips_through_its_link(monkeypatch, ckpt_root):
    at = app(monkeypatch, ckpt_root)
    at.switch_page("pages/style.py").run()
    at.selectbox(key="sx_run").set_value(str(ckpt_root / "m2-digits-z12")).run()
    at.pills(key="sx_y").set_value(3).run()
    at.slider[0].set_value(1.5).run()
    assert_clean(at, "style")
    params = dict(at.query_params)
    unit = at.slider[0].key.removeprefix("sx_z")
    assert params["model"] == "m2-digits-z12" and params["y"] == "3" and params["z"] == f"{int(unit) + 1}:1.5"
    code = at.code[0].value
    assert code.endswith("?" + "&".join(f"{k}={v}" for k, v in at.query_params.items()).replace(":", "%3A")
                         .replace(",", "%2C"))
    image = at.image[0].value[0]

    fresh = AppTest.from_file(APP, default_timeout=60)  # another browser: a new session opening the link
    fresh.query_params.update(params)
    fresh.switch_page("pages/style.py").run()
    assert_clean(fresh, "style (from the link)")
    assert fresh.selectbox(key="sx_run").value == str(ckpt_root / "m2-digits-z12")
    assert fresh.pills(key="sx_y").value == 3
    assert fresh.slider(key=f"sx_z{unit}").value == 1.5
    assert fresh.image[0].value[0] == image  # the same decoded image (media names are content hashes)
    assert dict(fresh.query_params) == params


def test_style_link_to_a_missing_model_says_so(monkeypatch, ckpt_root):
    monkeypatch.setenv("SSVAE_CHECKPOINTS", str(ckpt_root))
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params.update({"model": "gone", "z": "99:1"})  # no such model, no unit 99
    at.switch_page("pages/style.py").run()
    assert_clean(at, "style")
    assert any("The link asks for the model **gone**" in w.value for w in at.warning)
    assert all(s.value == 0.0 for s in at.slider)


def test_analogies_and_results_views_come_from_their_links(monkeypatch, ckpt_root):
    monkeypatch.setenv("SSVAE_CHECKPOINTS", str(ckpt_root))
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params.update({"model": "m2-digits-z2", "src": "test", "pick": "index", "idx": "3, 7"})
    at.switch_page("pages/analogies.py").run()
    assert_clean(at, "analogies")
    assert at.selectbox(key="an_run").value == str(ckpt_root / "m2-digits-z2")
    assert at.session_state["an_grid_shape"] == (2, 10)
    assert any(c.value.startswith("test #3 ") for c in at.caption)
    at.radio(key="an_mode").set_value("By class").run()
    at.segmented_control(key="an_cls").set_value(4).run()
    assert {k: at.query_params[k] for k in ("src", "pick", "cls", "n")} == {"src": "test", "pick": "class",
                                                                            "cls": "4", "n": "5"}

    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params.update({"run": "m2-digits-z12"})
    at.switch_page("pages/results.py").run()
    assert_clean(at, "results")
    assert "m2-digits-z12" in at.selectbox(key="rs_run").format_func(at.selectbox(key="rs_run").value)
    assert at.query_params["run"] == "m2-digits-z12" and at.query_params["ds"] == "mnist"


def _noise_png(seed: int = 0) -> bytes:
    """A PNG of uniform random grey noise."""
    import numpy as np

    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(seed).random((64, 64)) * 255).astype("uint8")).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def trained_root(tmp_path_factory) -> Path:
    """A checkpoint folder with a digits M2 trained long enough to tell digits from noise (30 epochs, ~15 s)."""
    root = tmp_path_factory.mktemp("trained")
    cfg = TrainConfig(model=ModelConfig(kind="m2", hidden=[64], z_dim=8), dataset="digits", labels=100,
                      epochs=30, batch_size=100, lr=3e-3, device="cpu")
    trainer = Trainer(cfg, load_dataset("digits"))
    list(trainer.epochs())
    save_trainer(trainer, root / "m2-digits-30")
    return root


def test_noise_upload_is_called_atypical_and_a_digit_is_not(monkeypatch, trained_root):
    at = app(monkeypatch, trained_root)
    at.switch_page("pages/analogies.py").run()
    at.segmented_control(key="an_src").set_value("upload").run()
    at.file_uploader(key="an_files").upload("noise.png", _noise_png(), "image/png").run()
    assert_clean(at, "analogies")
    assert any("Unlike anything the model was trained on" in w.value for w in at.warning)
    assert any("noise.png" in c.value and "ELBO" in c.value and "test images" in c.value for c in at.caption)

    at.segmented_control(key="an_src").set_value("test").run()  # test images are typical: no warning
    at.radio(key="an_mode").set_value("By index").run()
    assert_clean(at, "analogies")
    assert not any("Unlike anything" in w.value for w in at.warning), [c.value for c in at.caption if "ELBO" in c.value]
    assert sum("ELBO" in c.value for c in at.caption) == 5


def _sidebar_model(at: AppTest) -> str:
    """The run the sidebar's MODEL IN USE names (its folder in links)."""
    return next(c.value for c in at.sidebar.caption if c.value.startswith("Run: ")).removeprefix("Run: ").strip("`")


@pytest.mark.parametrize("page", ["pages/style.py", "pages/analogies.py"])
def test_sidebar_names_the_model_a_link_asks_for_at_once(monkeypatch, ckpt_root, page):
    monkeypatch.setenv("SSVAE_CHECKPOINTS", str(ckpt_root))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert _sidebar_model(at) == "m2-digits-z2"  # the default: the newest run
    fresh = AppTest.from_file(APP, default_timeout=60)
    fresh.query_params.update({"model": "m2-digits-z12"})
    fresh.switch_page(page).run()  # one run: the first thing a browser opening the link shows
    assert_clean(fresh, page)
    assert _sidebar_model(fresh) == "m2-digits-z12"


def test_results_page_shows_table_1_and_what_unlabelled_images_buy(monkeypatch, ckpt_root):
    at = app(monkeypatch, ckpt_root)
    at.switch_page("pages/results.py").run()
    assert_clean(at, "results")
    frames = [d.value for d in at.dataframe]
    table = next(f for f in frames if "source" in f.columns)
    assert list(table["model"]) == [r["model"] for r in measured.table_rows()]
    ours_m1 = table.loc[table["model"] == "M1 + label spreading", "N=100"].item()
    assert ours_m1 == measured.cell(*measured.TABLE["m1"][100])
    gain = next(f for f in frames if "mean" in f.columns)
    assert list(gain["model"]) == list(measured.GAIN_NAMES.values())
    assert gain["mean"].tolist() == [g["mean"] for g in measured.gain_rows()]


def test_results_page_shows_the_learning_curves_side_by_side(monkeypatch, ckpt_root):
    at = app(monkeypatch, ckpt_root)
    at.switch_page("pages/results.py").run()
    assert_clean(at, "results")
    chart = next(c for c in at.get("plotly_chart") if c.key == "rs_curves")
    lines = [t for t in json.loads(chart.proto.spec)["data"] if t.get("mode") == "lines"]
    runs = measured.curve_runs()
    assert [t["name"].split(" · ")[0] for t in lines] == [measured.GAIN_NAMES[k] for k in runs]
    assert [len(t["x"]) for t in lines] == [r["config"]["epochs"] for r in runs.values()]  # every epoch
    assert any(c.value.startswith(f"Validation error after each epoch with the same N = {measured.GAIN_N} labelled "
                                  f"images (label draw {measured.CURVES_DRAW})") for c in at.caption)


def test_train_page_offers_m1_s_classifier_and_passes_it_on(monkeypatch, tmp_path):
    at = app(monkeypatch, tmp_path / "ck")
    at.switch_page("pages/train.py").run()
    for model in ("m2", "m1m2", "supervised"):
        at.segmented_control(key="tr_model").set_value(model).run()
        assert "tr_classifier" not in [s.key for s in at.selectbox], model  # only M1 has one
    at.segmented_control(key="tr_model").set_value("m1").run()
    assert_clean(at, "train")
    box = at.selectbox(key="tr_classifier")
    assert box.value == recipe_settings("m1")["classifier"] == "spreading"  # the recipe's, the results table's row
    assert box.options == [CLASSIFIER_NAMES[k] for k in CLASSIFIERS]
    box.set_value("svm")
    at.selectbox(key="tr_dataset").set_value("digits")
    at.number_input(key="tr_epochs").set_value(1)
    at.run()
    next(b for b in at.button if b.label == "Start training").click().run()
    assert_clean(at, "train")
    job = jobs.get_job(at.session_state["tr_job"])
    assert (job.cfg.model.kind, job.cfg.classifier) == ("m1", "svm")
    job.join(120)
    assert read_meta(job.run_dir)["config"]["classifier"] == "svm"  # the run folder records it


def test_train_recipe_and_the_train_page_give_m1_the_same_classifier(train_configs, monkeypatch, tmp_path):
    from ssvae_core import cli

    seen = train_configs
    assert cli.main(["train", "--model", "m1", "--recipe", "--out", str(tmp_path / "m1")]) == 0
    from_cli = seen["cfg"].classifier
    assert cli.main(["train", "--model", "m1", "--out", str(tmp_path / "m1")]) == 0
    assert seen["cfg"].classifier == TrainConfig().classifier != from_cli  # without --recipe: the plain default
    at = app(monkeypatch, tmp_path / "ck")
    at.switch_page("pages/train.py").run()
    at.segmented_control(key="tr_model").set_value("m1").run()
    assert at.selectbox(key="tr_classifier").value == from_cli == recipe_settings("m1")["classifier"]
