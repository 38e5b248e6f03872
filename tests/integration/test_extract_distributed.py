"""Two processes under torchrun (CPU, gloo) write the same store as one process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import vlmscope.store
from vlmscope.cli import main
from vlmscope.data.shapes import export_vqa

TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed beside this python")
def test_two_processes_equal_one(tiny_dirs, tmp_path):
    data = export_vqa(7, tmp_path / "data", seed=11)
    args = [
        "extract",
        str(data),
        "--model",
        str(tiny_dirs["qwen2_5_vl"]),
        "--device",
        "cpu",
        "--checkpoint-every",
        "2",
        "--batch-size",
        "2",
        "--max-new-tokens",
        "3",
        "--no-progress",
    ]
    proc = subprocess.run(
        [
            str(TORCHRUN),
            "--standalone",
            "--nnodes",
            "1",
            "--nproc-per-node",
            "2",
            "-m",
            "vlmscope.cli",
            *args,
            "--out",
            str(tmp_path / "two"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "process 0/2" in proc.stdout and "process 1/2" in proc.stdout and "complete, 7 rows" in proc.stdout
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    with vlmscope.store.open(tmp_path / "two") as a, vlmscope.store.open(tmp_path / "one") as b:
        writers = {p: int(a._file(p).attrs["process"]) for p in a.parts}
        assert writers == {0: 0, 1: 1, 2: 0, 3: 1}  # part p on process p mod 2
        assert len(a) == len(b) == 7 and a.columns.keys() == b.columns.keys()
        ta, tb = a.samples(), b.samples()
        for k in ("index", "sample_id", "question", "gt_answer", "generated_answer", "token_map"):
            assert ta[k].tolist() == tb[k].tolist()
        for name in a.columns:
            for i in range(len(a)):
                np.testing.assert_allclose(a[name][i], b[name][i], rtol=1e-5, atol=1e-5)
