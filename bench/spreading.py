"""M1 + label spreading on MNIST: validation/test error per label draw, and the choice of k and α on validation.

    python bench/spreading.py --labels 100 --seeds 3,4,5                  # the defaults (k=20, α=0.99)
    python bench/spreading.py --labels 100 --seeds 0,1,2 --tune           # k × α on validation error only
    python bench/spreading.py --labels 100,600,1000,3000 --seeds 3,4,5 --k 20 --alpha 0.99
    python bench/spreading.py --labels 100 --seeds 3,4,5 --inductive     # as `train --classifier spreading`

Transductive by default (validation and test images join the graph); --inductive spreads over the training images
only and classifies validation and test by their k nearest graph points (SpreadingClassifier).

M1 is the shipped label-free one (checkpoints/pretrained/m1-mnist) unless --m1 names another m1/m1m2 run.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ssvae_core import spreading  # noqa: E402
from ssvae_core.checkpoints import m1_from_run  # noqa: E402
from ssvae_core.data import load_dataset  # noqa: E402
from ssvae_core.recipes import PAPER, SHIPPED_M1  # noqa: E402

KS, ALPHAS = (10, 20), (0.2, 0.99)  # the --tune grid


def main(argv: list[str] | None = None) -> int:
    """Print each run's errors, then mean ± std of the test error per N beside the paper's M1+TSVM."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--m1", default=SHIPPED_M1, help="an m1 or m1m2 run folder")
    p.add_argument("--labels", default="100", help="label budgets N, comma-separated")
    p.add_argument("--seeds", default="3,4,5", help="label draws, comma-separated")
    p.add_argument("--k", type=int, default=spreading.K_NEIGHBOURS)
    p.add_argument("--alpha", type=float, default=spreading.ALPHA)
    p.add_argument("--tune", action="store_true", help=f"every k in {KS} × α in {ALPHAS}; pick on validation")
    p.add_argument("--inductive", action="store_true", help="graph of the training images only (SpreadingClassifier)")
    p.add_argument("--data-dir", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    m1, fields = m1_from_run(a.m1)
    data = load_dataset(fields["dataset"], a.data_dir, download=False)
    features = spreading.latent_means(m1, data)
    print(f"{a.m1}: {features[0].shape[1]} active units")
    grid = list(itertools.product(KS, ALPHAS)) if a.tune else [(a.k, a.alpha)]
    for n in (int(v) for v in a.labels.split(",")):
        for k, alpha in grid:
            tests, vals = [], []
            for seed in (int(v) for v in a.seeds.split(",")):
                t = time.time()
                r = spreading.spreading_error(m1, data, n, seed, k, alpha, features, a.inductive)
                tests.append(r["test_error"])
                vals.append(r["val_error"])
                print(f"N={n} seed={seed} k={k} alpha={alpha:g}: validation {r['val_error']:.2f}%  "
                      f"test {r['test_error']:.2f}%  ({time.time() - t:.0f} s)", flush=True)
            sd = statistics.stdev(tests) if len(tests) > 1 else 0.0
            print(f"== N={n} k={k} alpha={alpha:g}: validation {statistics.mean(vals):.2f}%, test "
                  f"{statistics.mean(tests):.2f} ± {sd:.2f}% over {len(tests)} draws "
                  f"(paper M1+TSVM {PAPER['m1'].get(n, float('nan')):.2f}%)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
