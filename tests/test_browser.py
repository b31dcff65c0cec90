"""Real-browser check: `streamlit run app.py` on a free port, every page opened in headless Chromium and
screenshotted (to $SSVAE_SHOTS, default a tmp dir), and a z slider moved by keyboard must change the image."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
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


def random_weights_run(src: Path, dst: Path) -> Path:
    """A copy of run `src` at `dst` whose weights are random bytes, with run.json's sha256 matching them."""
    import hashlib
    import json
    import shutil

    shutil.copytree(src, dst)
    data = b"\x13" + os.urandom(19999)
    (dst / "model.pt").write_bytes(data)
    meta = json.loads((dst / "run.json").read_text())
    meta["weights"]["sha256"] = hashlib.sha256(data).hexdigest()
    (dst / "run.json").write_text(json.dumps(meta))
    return dst


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory) -> Path:
    """A checkpoint root with one tiny digits run and a copy of it whose weights are random bytes."""
    root = tmp_path_factory.mktemp("browser-checkpoints")
    tiny_run(root, 12, "m2-digits")
    random_weights_run(root / "m2-digits", root / "m2-digits-random")
    return root


PAGE_TIMEOUT = 120_000  # ms: an upper bound for a first page load (imports torch) on a busy 2-core machine


@contextmanager
def streamlit_server(root: Path, crash: bool = False) -> Iterator[str]:
    """`streamlit run app.py` on a free port with its checkpoint root at `root`; yields its URL. crash=True ends it
    with SIGKILL, as a power cut would, instead of asking it to stop."""
    port = free_port()
    env = {**os.environ, "SSVAE_CHECKPOINTS": str(root), "OMP_NUM_THREADS": "1"}
    log = open(root / f"streamlit-{port}.log", "w")  # noqa: SIM115 - closed below
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
                raise RuntimeError("streamlit did not start:\n" + Path(log.name).read_text()[-2000:])
            time.sleep(0.5)
        yield url
    finally:
        if crash:
            proc.kill()
        else:
            proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def server(checkpoint_dir) -> Iterator[str]:
    """A Streamlit server whose checkpoint root is `checkpoint_dir`; yields its URL."""
    with streamlit_server(checkpoint_dir) as url:
        yield url


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
            page.wait_for_selector('[data-testid="stMain"] h1', timeout=PAGE_TIMEOUT)
            settle(page)
            nav = page.locator('[data-testid="stSidebarNav"]').inner_text()
            assert "Style explorer" in nav and "charts" not in nav, nav
            assert urllib.parse.urlparse(page.url).path == "/analogies", page.url  # the view's state may follow
            assert page.locator('[role="dialog"]').count() == 0, "a dialog (e.g. 'Page not found') is open"
            assert "Analogies" in page.locator('[data-testid="stMain"] h1').first.inner_text()
            for name in PAGES:
                page.goto(f"{server}/{name}")
                page.wait_for_selector('[data-testid="stMain"] h1', timeout=PAGE_TIMEOUT)  # the page title
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


@pytest.fixture
def page(server) -> Iterator:
    """A fresh headless Chromium page (1440×900)."""
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser.new_page(viewport={"width": 1440, "height": 900})
        finally:
            browser.close()


def open_page(page, url: str) -> None:
    """Go to `url` and wait until the page title is drawn and the script has finished."""
    page.goto(url)
    page.wait_for_selector('[data-testid="stMain"] h1', timeout=PAGE_TIMEOUT)
    settle(page)


def shots_dir(tmp_path: Path) -> Path:
    """Where screenshots go: $SSVAE_SHOTS, else the test's tmp dir."""
    shots = Path(os.environ.get("SSVAE_SHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    return shots


def test_no_request_leaves_the_machine(server, page):
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    for name in PAGES:
        open_page(page, f"{server}/{name}")
    local = (server + "/", "data:", "blob:", "about:")
    outside = sorted({u for u in requests if not u.startswith(local) and u != server})
    assert len(requests) > 10 and not outside, f"requests to other hosts: {outside}"
    icons = page.locator('link[rel*="icon"]').evaluate_all("links => links.map(l => l.href)")
    assert icons and all(i.startswith(local) for i in icons), icons


# every KaTeX formula on the page: whether its symbols lie inside its column (its card's border) and no ancestor
# clips it
FORMULAS_JS = """() => [...document.querySelectorAll('[data-testid=stMain] .katex')].map(k => {
    const block = k.closest('[data-testid=stColumn]') || k.closest('[data-testid=stMarkdownContainer]');
    const b = block.getBoundingClientRect();
    const glyphs = [...k.querySelectorAll('.katex-html *')].filter(e => !e.children.length && e.textContent.trim())
        .map(e => e.getBoundingClientRect());  // the drawn symbols (spacing at a line's end may hang over)
    const r = {left: Math.min(...glyphs.map(g => g.left)), right: Math.max(...glyphs.map(g => g.right))};
    let clipped = null;
    for (let e = k; e && e !== document.body; e = e.parentElement) {
        if (getComputedStyle(e).overflowX !== 'visible' && e.scrollWidth > e.clientWidth + 1) {
            clipped = `${e.className}: ${e.scrollWidth}px of content in ${e.clientWidth}px`; break; }
    }
    const inside = glyphs.length > 0 && r.left >= b.left - 1 && r.right <= b.right + 1;
    return {text: k.textContent.slice(0, 50), inside, clipped, left: r.left, right: r.right, box: [b.left, b.right]};
})"""


@pytest.mark.parametrize("width", [1440, 1280, 1024])
def test_home_formulas_render_whole(server, page, width):
    page.set_viewport_size({"width": width, "height": 900})
    open_page(page, server)
    formulas = page.evaluate(FORMULAS_JS)
    assert len(formulas) >= 8, formulas  # three models, five objectives
    bad = [f for f in formulas if f["clipped"] or not f["inside"]]
    assert not bad, f"clipped formulas at {width}px: {bad}"


def _number_field(page, label: str):
    """The element container of the Train form's number input labelled `label`."""
    return page.locator('[data-testid="stElementContainer"]').filter(
        has=page.get_by_label(label, exact=True)).last


def _type(page, label: str, value: str) -> None:
    """Type `value` into the field labelled `label` and commit it (Enter), as a user would."""
    box = page.get_by_label(label, exact=True)
    box.fill(value)
    box.press("Enter")
    settle(page)


def _message_under(page, field, words: str) -> None:
    """Assert the red refusal `words` is shown directly under `field` (same column, within 60 px below)."""
    msg = page.locator('[data-testid="stMain"] [data-testid="stMarkdownContainer"]').filter(has_text=words).first
    msg.wait_for(timeout=15_000)
    f, m = field.bounding_box(), msg.bounding_box()
    assert 0 <= m["y"] - (f["y"] + f["height"]) <= 60 and abs(m["x"] - f["x"]) <= 10, (f, m)
    color = msg.locator("span").first.evaluate("e => getComputedStyle(e).color")
    assert color != "rgb(49, 51, 63)", color  # drawn red, not as body text


def test_train_form_refuses_epochs_0_and_n_15(server, page, tmp_path):
    open_page(page, f"{server}/train")
    start = page.get_by_role("button", name="Start training")
    assert start.is_enabled()
    _type(page, "Epochs", "0")
    assert page.get_by_label("Epochs", exact=True).input_value() == "0"  # kept as typed, not clamped
    assert start.is_disabled()
    _message_under(page, _number_field(page, "Epochs"), "Epochs must be from 1 to 3,000; 0 is outside that range.")
    shoot(page, shots_dir(tmp_path) / "train-epochs-0.png")
    _type(page, "Epochs", "10")
    assert start.is_enabled()
    _type(page, "Labelled images N", "15")
    assert page.get_by_label("Labelled images N", exact=True).input_value() == "15"
    assert start.is_disabled()
    _message_under(page, _number_field(page, "Labelled images N"), "N must be a multiple of 10")
    shoot(page, shots_dir(tmp_path) / "train-n-15.png")
    _type(page, "Labelled images N", "100")
    assert start.is_enabled()


def test_train_form_shows_m1_s_classifier_for_m1_only(server, page, tmp_path):
    from ssvae_core.recipes import CLASSIFIER_NAMES

    open_page(page, f"{server}/train")
    main = page.locator('[data-testid="stMain"]')
    assert main.get_by_text("M1's classifier", exact=True).count() == 0  # the default model is M1+M2
    main.get_by_role("radiogroup", name="Model").get_by_role("radio", name="M1", exact=True).click()
    settle(page)
    box = main.locator('[data-testid="stSelectbox"]').filter(has_text="M1's classifier")
    box.wait_for(timeout=15_000)
    assert box.is_visible()
    assert box.locator("input").input_value() == CLASSIFIER_NAMES["spreading"]  # the recipe's
    assert box.locator("input").evaluate("e => e.scrollWidth <= e.clientWidth"), "the name is cut off"
    shoot(page, shots_dir(tmp_path) / "train-m1-classifier.png")


def test_random_weights_show_as_broken_on_results(server, page, tmp_path):
    open_page(page, f"{server}/results")
    caption = page.locator('[data-testid="stCaptionContainer"]').filter(has_text="run folders under")
    assert "1 broken" in caption.inner_text()
    # the table is drawn on a canvas; pick the run below it and read what the page says about it
    picker = page.locator('[data-testid="stSelectbox"]').filter(has_text="Run").last
    picker.locator("input").click()
    page.keyboard.type("random")
    page.keyboard.press("Enter")
    settle(page)
    alert = page.locator('[data-testid="stAlertContentError"]').filter(has_text="This run is broken")
    assert "is not a PyTorch weights file" in alert.inner_text()
    shoot(page, shots_dir(tmp_path) / "results-broken.png")
    open_page(page, f"{server}/style")  # never offered as a model
    picker = page.locator('[data-testid="stSelectbox"]').first
    assert "m2-digits-random" not in picker.inner_text()
    assert "Left out, broken: m2-digits-random" in page.locator('[data-testid="stMain"]').inner_text()


def test_style_link_opens_the_same_view_in_a_new_browser(server, tmp_path):
    """Set a class and move the first slider; the page's link, opened in a fresh browser context, shows the same
    decoded image, pixel for pixel."""
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            open_page(page, f"{server}/style")
            img = page.locator('[data-testid="stMain"] [data-testid="stImage"] img').first
            page.get_by_role("radiogroup", name="Class y").get_by_role("radio", name="3", exact=True).click()
            settle(page)
            src = img.get_attribute("src")
            thumb = page.locator('[data-testid="stSlider"] input[type="range"], '
                                 '[data-testid="stSlider"] [role="slider"]').first
            thumb.focus()
            thumb.press("End")  # to +3 in one key press (each press reruns the script)
            end = time.time() + 20
            while img.get_attribute("src") == src and time.time() < end:
                time.sleep(0.2)
            assert img.get_attribute("src") != src, "moving the first z slider did not change the image"
            settle(page)
            link = page.locator('[data-testid="stMain"] [data-testid="stCode"] code').first.inner_text().strip()
            assert link.startswith(f"{server}/style?") and "y=3" in link and "z=" in link, link
            assert page.url == link, (page.url, link)  # the address bar holds the same view
            pixels = rendered_pixels(img)
            shoot(page, shots_dir(tmp_path) / "style-linked-from.png")

            other = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()  # no shared state
            open_page(other, link)
            copy = other.locator('[data-testid="stMain"] [data-testid="stImage"] img').first
            assert rendered_pixels(copy) == pixels, "the link did not reproduce the decoded image"
            label = other.locator('[data-testid="stSlider"]').first.inner_text()
            assert "3.00" in label, label  # the moved slider, the first one shown
            shoot(other, shots_dir(tmp_path) / "style-linked-to.png")
        finally:
            browser.close()
