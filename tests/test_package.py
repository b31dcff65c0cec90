"""Packaging: the wheel holds ssvae_core and the `ssvae` console script, and runs from a plain install."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def test_wheel_installs_and_runs(tmp_path):
    src = tmp_path / "src"  # a copy, so the build leaves no build/ or *.egg-info in the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "ssvae_core", src / "ssvae_core", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    # no build isolation: setuptools is already here, so the build needs no network
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)],
                   check=True, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("ssvae-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        assert "ssvae_core/cli.py" in names and "ssvae_core/__main__.py" in names
        assert not any(n.startswith(("pages/", "tests/", "checkpoints/")) for n in names)
        (entry,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        assert "ssvae = ssvae_core.cli:main" in z.read(entry).decode()

    target = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True, cwd=tmp_path)
    env = {**os.environ, "PYTHONPATH": str(target), "PATH": f"{target / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    run = lambda *cmd: subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,  # noqa: E731
                                      timeout=120)
    where = run(sys.executable, "-c", "import ssvae_core; print(ssvae_core.__file__)")
    assert where.stdout.strip().startswith(str(target)), where.stdout + where.stderr  # not the checkout's copy
    for cmd in ([sys.executable, "-m", "ssvae_core", "--help"], [str(target / "bin" / "ssvae"), "--help"]):
        out = run(*cmd)
        assert out.returncode == 0, out.stderr
        assert "train" in out.stdout and "reproduce" in out.stdout
