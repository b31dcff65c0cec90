"""Server-side latency of the interactive pages: slider value → new image, a 10×10 analogy grid, a page rerun.

    python bench/latency.py                       # newest good M2/M1+M2 run under checkpoints/, else untrained
    python bench/latency.py --run checkpoints/pretrained/m2-mnist-n100 --repeats 200
    python bench/latency.py --untrained           # a fresh MNIST-size M2 (784 pixels, 500 hidden, 50-d z)

Prints medians (and 90th percentiles) in milliseconds on the CPU (or --device cuda).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ssvae_core import generate  # noqa: E402
from ssvae_core.checkpoints import list_runs, load_run, save_run  # noqa: E402
from ssvae_core.models import ModelConfig, build_model  # noqa: E402
from ssvae_core.train import TrainConfig  # noqa: E402


def timed(fn, repeats: int, warmup: int = 3) -> tuple[float, float]:
    """(median, 90th percentile) wall time of fn() in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(0.9 * len(times)))]


def untrained_run(folder: Path) -> Path:
    """Save a freshly initialised MNIST-size M2 (the paper's architecture) as a run folder."""
    cfg = TrainConfig(model=ModelConfig(kind="m2"), dataset="mnist", labels=100, epochs=0)
    model = build_model(cfg.model, 784, 10)
    info = {"data": {"name": "mnist", "x_dim": 784, "num_classes": 10, "image_shape": [1, 28, 28]},
            "history": [], "best": {"val_error": None, "test_error": None, "epoch": 0}, "epochs": 0}
    return save_run(folder / "untrained-m2-mnist", model, cfg, info)


def newest_run(root: str) -> Path | None:
    """The newest good M2 / M1+M2 run under `root`."""
    rows = [r for r in list_runs(root) if r["ok"] and r.get("model") in ("m2", "m1m2")]
    return Path(rows[0]["path"]) if rows else None


def page_rerun(run_dir: Path, repeats: int) -> tuple[float, float]:
    """Median / p90 of a full Style explorer rerun after a slider move (AppTest, server side only)."""
    from streamlit.testing.v1 import AppTest

    os.environ["SSVAE_CHECKPOINTS"] = str(run_dir.parent)
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=60).run()
    at.switch_page("pages/style.py").run()
    at.selectbox(key="sx_run").set_value(str(run_dir)).run()
    values = iter(np.tile(np.linspace(-2.5, 2.5, 11), repeats + 10))
    return timed(lambda: at.slider(key="sx_z0").set_value(float(next(values))).run(), repeats, warmup=2)


def main(argv: list[str] | None = None) -> int:
    """Run the measurements and print them."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default=None, help="run folder (default: newest good M2/M1+M2 under --root)")
    p.add_argument("--root", default=os.environ.get("SSVAE_CHECKPOINTS", "checkpoints"))
    p.add_argument("--untrained", action="store_true", help="time a fresh MNIST-size M2 instead of a checkpoint")
    p.add_argument("--repeats", type=int, default=100)
    p.add_argument("--page-repeats", type=int, default=20, help="full page reruns to time (0 skips)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    a = p.parse_args(argv)

    tmp = tempfile.TemporaryDirectory()
    run_dir = None if a.untrained else (Path(a.run) if a.run else newest_run(a.root))
    label = str(run_dir) if run_dir else "untrained MNIST-size M2 (784-500-50, K=10)"
    if run_dir is None:
        run_dir = untrained_run(Path(tmp.name))
    run = load_run(run_dir, device=a.device)
    model = run.model
    model.image_shape = tuple(run.meta["data"]["image_shape"])
    c, h, w = model.image_shape
    d, k = generate.z_dim(model), model.num_classes
    scale = max(1, round(336 / w))
    rng = np.random.default_rng(0)

    def one_image() -> bytes:
        """New slider values → decoded image → PNG, as on the Style explorer."""
        z = rng.standard_normal((1, d)).astype(np.float32)  # the slider values
        return generate.to_png_bytes(generate.decode(model, z, [3])[0], scale)

    x = rng.random((10, c * h * w)).astype(np.float32)

    def analogy() -> bytes:
        """Ten inputs → styles → every class → one PNG."""
        grid = generate.analogy_grid(model, x, with_inputs=True)
        return generate.to_png_bytes(grid, max(1, round(56 / w)))  # the Analogies page's scale

    zs = rng.standard_normal((8, d)).astype(np.float32)

    def style_grid() -> bytes:
        """Eight styles × every class → one PNG."""
        return generate.to_png_bytes(generate.class_grid(model, zs), max(1, 56 // w))

    print(f"model: {label}")
    print(f"  {run.cfg.model.kind}, image {c}×{h}×{w}, z {d}, K {k}; device {a.device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    rows = [(f"slider → image (decode 1 z, PNG ×{scale})", timed(one_image, a.repeats)),
            (f"analogy grid 10 inputs × {k} classes → PNG", timed(analogy, a.repeats)),
            (f"style grid 8 styles × {k} classes → PNG", timed(style_grid, a.repeats))]
    if a.page_repeats > 0:
        rows.append(("full Style explorer rerun (AppTest)", page_rerun(Path(run_dir), a.page_repeats)))
    for name, (med, p90) in rows:
        print(f"  {name:<46} median {med:8.2f} ms   p90 {p90:8.2f} ms")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
