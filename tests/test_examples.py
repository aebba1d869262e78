"""The scripts under ``examples/`` run as a user would run them (fresh process, own working directory) and
produce the results they advertise."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

EXAMPLES = ROOT / "examples"


def run_example(name: str, cwd, *args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def number_after(pattern: str, text: str) -> float:
    match = re.search(pattern + r"\s*([-+0-9.]+)", text)
    assert match, f"{pattern!r} not found in:\n{text[-2000:]}"
    return float(match.group(1))


def test_every_example_is_covered():
    scripts = sorted(p.name for p in EXAMPLES.glob("*.py"))
    tested = sorted(re.findall(r'run_example\("([^"]+\.py)"', (ROOT / "tests" / "test_examples.py").read_text()))
    assert scripts == sorted(set(tested))


@pytest.mark.slow
def test_spikellm_example(tmp_path):
    out = run_example("spikellm_quantize_my_model.py", tmp_path)
    fp = number_after(r"full precision: perplexity", out)
    plain = number_after(r"plain W4A4\s*: perplexity", out)
    spike = number_after(r"SpikeLLM W4A4 : perplexity", out)
    assert fp < spike < plain  # the embedded model is trained; spiking recovers part of the W4A4 loss
    assert "identical logits = True" in out
    assert len(ast.literal_eval(out.split("greedy continuation:")[1].strip())) > 40


@pytest.mark.slow
def test_concrete_kmeans_example(tmp_path):
    out = run_example("concrete_kmeans_my_features.py", tmp_path)
    nmi = ast.literal_eval(out.split("concrete k-means:")[1].splitlines()[0].strip())["nmi"]
    assert nmi > 0.6  # 10 digit classes: chance NMI is ~0
    sizes = ast.literal_eval(out.split("cluster sizes:")[1].splitlines()[0].strip())
    assert len(sizes) == 10 and sum(sizes) == 1797


@pytest.mark.slow
def test_metamd_example(tmp_path):
    out = run_example("metamd_in_my_model.py", tmp_path)
    neutral = number_after(r"MetaMD neutral map = Adam lr=1e-3\s+train loss", out)
    adam = number_after(r"torch.optim.Adam lr=1e-3\s+train loss", out)
    assert abs(neutral - adam) <= 1e-4 * max(adam, 1e-3)  # the neutral map is Adam
    shipped = number_after(r"MetaMD \(shipped map, lr=1e-3\)\s+train loss", out)
    assert shipped <= 1.1 * adam  # the shipped map at defaults is no worse than Adam at its defaults
    before, after = map(float, re.search(r"vs Adam ([-+0-9.]+) -> ([-+0-9.]+)", out).groups())
    assert after <= before + 0.05  # selection on validation tasks: held-out score does not get (much) worse


@pytest.mark.slow
def test_taylor_loss_example(tmp_path):
    out = run_example("taylor_loss_in_my_model.py", tmp_path)
    ce = number_after(r"cross-entropy: clean test accuracy", out)
    taylor = number_after(r"TaylorLoss\(\): clean test accuracy", out)
    assert taylor > ce  # 40 % symmetric label noise: the robust loss wins


@pytest.mark.slow
def test_heurimentor_example(tmp_path):
    out = run_example("heurimentor_existing_trainer.py", tmp_path)
    skipped = ast.literal_eval(out.split("skipped steps:")[1].splitlines()[0].strip())
    assert skipped and all(80 <= s <= 145 for s in skipped)  # only inside the corrupted stretch
    weights = ast.literal_eval(out.split("final mixture weights:")[1].splitlines()[0].strip())
    assert weights["code"] < 0.4  # the corrupted source was down-weighted from its 0.4
    assert (tmp_path / "heurimentor_example" / "heurimentor.log").is_file()


@pytest.mark.slow
def test_fe_adapter_example(tmp_path):
    out = run_example("fe_adapter_custom_dataset.py", tmp_path)
    uar = number_after(r"test/uar\s*│", out)
    assert uar > 0.4  # 4 classes that per-frame models cannot tell apart: chance is 0.25
    assert (tmp_path / "fe_adapter_custom.safetensors").is_file() and "identical logits = True" in out
