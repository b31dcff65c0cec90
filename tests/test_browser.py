"""Real-browser check: `streamlit run app.py` on a free port, every page opened in headless Chromium and
screenshotted (to $SSVAE_SHOTS, default a tmp dir), and a z slider moved by keyboard must change the image."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REPO = Path(__file__).resolve().parents[1]
PAGES = ["", "train", "style", "analogies", "results"]

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


def tiny_run(root: Path, z_dim: int, name: str) -> Path:
    """Train a digits M2 for one epoch and save it under `root`."""
    from ssvae_core.checkpoints import save_trainer
    from ssvae_core.data import load_dataset
    from ssvae_core.models import ModelConfig
    from ssvae_core.train import TrainConfig, Trainer

    cfg = TrainConfig(model=ModelConfig(kind="m2", hidden=[32], z_dim=z_dim), dataset="digits", labels=100,
                      epochs=1, batch_size=300, lr=1e-3, device="cpu")
    trainer = Trainer(cfg, load_dataset("digits"))
    list(trainer.epochs())
    return save_trainer(trainer, root / name)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    """A Streamlit server on a free port whose checkpoint root holds one tiny digits run; yields its URL."""
    root = tmp_path_factory.mktemp("browser-checkpoints")
    tiny_run(root, 12, "m2-digits")
    port = free_port()
    env = {**os.environ, "SSVAE_CHECKPOINTS": str(root)}
    log = open(root / "streamlit.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                             "--server.port", str(port), "--browser.gatherUsageStats", "false"],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.time() + 60
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > end:
                raise RuntimeError("streamlit did not start:\n" + (root / "streamlit.log").read_text()[-2000:])
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def settle(page, timeout: float = 30.0) -> None:
    """Wait until the script has finished running and no skeleton placeholders remain."""
    end = time.time() + timeout
    time.sleep(0.5)
    while time.time() < end:
        busy = (page.locator('[data-testid="stStatusWidget"]').count()
                + page.locator('[data-testid="stSkeleton"]').count())
        if busy == 0:
            break
        time.sleep(0.25)
    time.sleep(0.75)


def rendered_pixels(img) -> str:
    """The pixels the browser shows for an <img>, as a PNG data URL (drawn through a canvas)."""
    img.page.wait_for_function("el => el.complete && el.naturalWidth > 0", arg=img.element_handle(), timeout=15_000)
    return img.evaluate("""el => { const c = document.createElement('canvas');
        c.width = el.naturalWidth; c.height = el.naturalHeight;
        c.getContext('2d').drawImage(el, 0, 0); return c.toDataURL('image/png'); }""")


def shoot(page, path: Path) -> None:
    """Full-height screenshot of the app's main area (the viewport grows until the page fits)."""
    height = 0
    for _ in range(4):
        h = page.evaluate('() => (document.querySelector("[data-testid=stMain]") || {}).scrollHeight || 900')
        if h <= height:
            break
        height = int(min(max(900, h), 4000))
        page.set_viewport_size({"width": 1440, "height": height})
        settle(page, 10)
    page.screenshot(path=str(path))
    page.set_viewport_size({"width": 1440, "height": 900})


def test_every_page_and_slider(server, tmp_path):
    shots = Path(os.environ.get("SSVAE_SHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            # a deep link on the fresh server must still go through app.py's st.navigation (not pages/ mode)
            page.goto(f"{server}/analogies")
            page.wait_for_selector('[data-testid="stMain"] h1', timeout=30_000)
            settle(page)
            nav = page.locator('[data-testid="stSidebarNav"]').inner_text()
            assert "Style explorer" in nav and "charts" not in nav, nav
            assert page.url.endswith("/analogies"), page.url
            assert page.locator('[role="dialog"]').count() == 0, "a dialog (e.g. 'Page not found') is open"
            assert "Analogies" in page.locator('[data-testid="stMain"] h1').first.inner_text()
            for name in PAGES:
                page.goto(f"{server}/{name}")
                page.wait_for_selector('[data-testid="stMain"] h1', timeout=30_000)  # the page title
                settle(page)
                assert page.locator('[data-testid="stException"]').count() == 0, f"exception on /{name}"
                shoot(page, shots / f"{name or 'home'}.png")

            page.goto(f"{server}/style")
            page.wait_for_selector('[data-testid="stMain"] [data-testid="stImage"] img', timeout=30_000)
            settle(page)
            img = page.locator('[data-testid="stMain"] [data-testid="stImage"] img').first
            src_before = img.get_attribute("src")
            pixels_before = rendered_pixels(img)
            thumb = page.locator('[data-testid="stSlider"] input[type="range"], '
                                 '[data-testid="stSlider"] [role="slider"]').first
            thumb.focus()
            for _ in range(20):
                thumb.press("ArrowRight")
            end = time.time() + 20
            while img.get_attribute("src") == src_before and time.time() < end:
                time.sleep(0.2)
            assert img.get_attribute("src") != src_before, "moving the z slider did not change the image"
            settle(page)  # the key presses may trigger several reruns; take the final image
            src_after = img.get_attribute("src")
            assert src_after != src_before
            assert rendered_pixels(img) != pixels_before, "the image src changed but its pixels did not"
            shoot(page, shots / "style-moved.png")
        finally:
            browser.close()
    assert {f"{n or 'home'}.png" for n in PAGES} <= {f.name for f in shots.iterdir()}
