"""benchmarks/gpu_check.sh, the one prepared GPU pass: valid shell, and without a GPU it says so
and stops after writing env.txt (a GPU session must not find it broken)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


def test_script_is_valid_bash():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="machine has CUDA: the script would run")
def test_without_a_gpu_it_says_so_and_stops(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path / "out")], capture_output=True, text=True, env=env,
        cwd=REPO, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert "no CUDA GPU visible" in done.stderr
    env_txt = (tmp_path / "out" / "env.txt").read_text()
    assert f"torch {torch.__version__}" in env_txt and "GPUs 0" in env_txt
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["env.txt"]  # nothing ran
