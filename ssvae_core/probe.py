"""How much class information M1's latent means carry: the ceiling under any classifier built on them (M1+M2).

python -m ssvae_core probe runs/table1/m1
M1+M2 classifies z1 = E[z1|x] on M1's active units. An MLP like M2's q(y|z1), trained on those features with every
training label, shows how low M1+M2's error could go with this M1, whatever the label budget.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from ssvae_core.checkpoints import m1_from_run
from ssvae_core.classifiers import fit_latent_classifier
from ssvae_core.data import Dataset, label_split, load_dataset
from ssvae_core.flags import add_data_args
from ssvae_core.models import M1, mlp
from ssvae_core.train import active_units, error_rate, m1_features


def probe(m1: M1, data: Dataset, budgets: tuple[int, ...] = (100, 1000, 10000), epochs: int = 15,
          threshold: float = 0.01, seed: int = 0) -> dict:
    """Validation errors on M1's active latent means: 3-NN with each label budget, and an MLP with every label."""
    torch.manual_seed(seed)
    z_train = m1_features(m1, data.x_train)
    active = active_units(z_train, threshold)
    z_train, z_val = z_train[:, active], m1_features(m1, data.x_val)[:, active]
    knn = {}
    for n in budgets:
        if n <= len(data.y_train) and n % data.num_classes == 0:
            lab, _ = label_split(data.y_train, n, data.num_classes, seed)
            clf = fit_latent_classifier("knn", z_train[lab].cpu().numpy(), data.y_train[lab].cpu().numpy())
            knn[n] = error_rate(clf.predict(z_val.cpu().numpy()), data.y_val)
    net = mlp([len(active), 500, data.num_classes], "softplus").to(z_train.device)  # the shape of M2's q(y|z1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(epochs):
        for b in torch.randperm(len(z_train), device=z_train.device).split(100):
            loss = F.cross_entropy(net(z_train[b]), data.y_train[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    with torch.no_grad():
        all_labels = error_rate(net(z_val).argmax(-1), data.y_val)
    return {"active": len(active), "knn": knn, "all_labels": all_labels}


def cmd_probe(a: argparse.Namespace) -> int:
    m1, fields = m1_from_run(a.run_dir)
    data = load_dataset(fields["dataset"], a.data_dir, download=not a.no_download)
    m1.requires_grad_(False)
    r = probe(m1, data, epochs=a.epochs)
    print(f"{a.run_dir}: {r['active']} active z1 units; validation error on their means:")
    for n, err in r["knn"].items():
        print(f"  3-NN with {n} labels: {err:.2f}%")
    print(f"  MLP ({r['active']}-500-{data.num_classes}) with all {len(data.y_train)} labels, {a.epochs} epochs: "
          f"{r['all_labels']:.2f}%  (roughly the floor of M1+M2 on this M1)")
    return 0


def add_parser(sub) -> None:
    """Register `probe` on the CLI."""
    p = sub.add_parser("probe", help="how well an M1's latent means can be classified (the ceiling of M1+M2)")
    p.add_argument("run_dir", help="an m1 or m1m2 run folder")
    p.add_argument("--epochs", type=int, default=15, help="epochs of the all-labels MLP")
    add_data_args(p)
    p.set_defaults(func=cmd_probe)
