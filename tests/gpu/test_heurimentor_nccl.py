"""GPU smoke test of HeuriMentor at its real setting: 2 GPUs, FSDP2, NCCL (skipped without 2 CUDA devices).

Run on a machine with >= 2 GPUs:  python -m pytest tests/gpu -q
It checks what CPU/gloo tests cannot: that every collective HeuriMentor issues is a CUDA tensor on the
strategy's root device (NCCL rejects CPU tensors), that the pinned host snapshot restores bit-exactly, and that
a spike planted on one rank is skipped by both while a persistent one is rolled back.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs (FSDP2 + NCCL)")

JOB = Path(__file__).with_name("heurimentor_nccl_job.py")


def test_two_gpu_fsdp2_nccl_skip_and_rollback(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(JOB), str(tmp_path)], capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["skipped"] == r1["skipped"] and 15 in r0["skipped"]  # planted on rank 1 only: both skip
    assert {25, 26, 27} <= set(r0["skipped"])
    assert r0["rollback"] and r0["rollback"]["step"] == 27 and r0["rollback"] == r1["rollback"]
    assert r0["restored_bit_exact"] and r1["restored_bit_exact"]
    assert r0["unchanged_at_single"] and r1["unchanged_at_single"]
    assert r0["violations"] == r1["violations"] == []
    assert r0["collectives"] == r1["collectives"]
    hm = [c for c in r0["collectives"] if c[-1]]
    assert hm and all(c[4].startswith("cuda") for c in hm)  # NCCL: CUDA tensors on the root device
    assert r0["final_loss_finite"] and r1["final_loss_finite"]
