"""Two gloo processes with FSDP2 (ModelParallelStrategy on CPU): one-rank spike makes both skip, no hang;
save a sharded checkpoint on 2 processes, load it on 1, parameters equal.

Runs tests/heurimentor/fsdp_job.py in subprocesses (Lightning relaunches the script for rank 1).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

JOB = Path(__file__).with_name("fsdp_job.py")


def run(phase, out):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(JOB), phase, str(out)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.slow
def test_fsdp_two_processes_skip_together_and_reshard_to_one(tmp_path):
    run("train", tmp_path)
    r0 = json.loads((tmp_path / "train_rank0.json").read_text())
    r1 = json.loads((tmp_path / "train_rank1.json").read_text())
    assert r0["skipped"] == r1["skipped"] == [4]  # the spike happened on rank 1 only
    # every collective went through trainer.strategy on the root device, in the same order on both ranks
    assert r0["violations"] == r1["violations"] == []
    assert r0["collectives"] == r1["collectives"]
    hm = [c for c in r0["collectives"] if c[-1]]  # the ones HeuriMentor issued
    assert all(c[0] == "reduce" and c[4] == "cpu" for c in hm)
    assert [c[1] for c in hm] == [0, 1, 2, 3, 4, 5, 6]  # one per step, plus the trajectory record at the checkpoint
    assert hm[5][2] == [4 + 2 * 3]  # step 5 carries the per-source blame of the spike at step 4 (3 sources)
    assert r0["unchanged_at_spike"] and r1["unchanged_at_spike"]
    assert r0["changed_before"] and r1["changed_before"]
    assert not set(r0["ids"]) & set(r1["ids"])  # each rank its own slice
    assert r0["trained_next"] == r1["trained_next"] == 2 * 2 * 6  # 6 steps x 2 ranks x batch 2
    assert (tmp_path / "ckpt").is_dir() and len(list((tmp_path / "ckpt").glob("*.distcp"))) == 2

    run("load", tmp_path)
    loaded = json.loads((tmp_path / "load.json").read_text())
    assert loaded["equal"]  # sharded on 2 processes, loaded on 1: same parameters
    assert loaded["position"] == 24 and loaded["skipped"] == [4]
    assert len(loaded["first_ids"]) == 2
