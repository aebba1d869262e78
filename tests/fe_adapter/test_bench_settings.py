"""The FE-Adapter benchmark needs no source checkout, and its settings are those of the shipped config."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import ttest_rel

import lightning_papers
from lightning_papers.bench import fe_adapter as bench
from lightning_papers.bench.measure import paired_difference, paired_verdict

REPO = Path(__file__).resolve().parents[2]


def test_bench_settings_equal_the_synthetic_fit_config():
    config = REPO / "cli_configs" / "fe_adapter" / "synthetic.yaml"
    if not config.is_file():
        pytest.skip("no source checkout")
    assert bench.settings_from_config(config) == bench.SETTINGS
    assert bench.settings() == bench.SETTINGS and bench.settings() is not bench.SETTINGS


def test_bench_settings_load_from_a_package_copy_without_the_repository(tmp_path):
    # a copy of the installed package alone, in a folder with no cli_configs anywhere above it
    site = tmp_path / "site"
    shutil.copytree(
        Path(lightning_papers.__file__).parent,
        site / "lightning_papers",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    code = (
        "import json, lightning_papers; from lightning_papers.bench import fe_adapter as b; "
        "print(json.dumps({'file': lightning_papers.__file__, 'settings': b.settings()}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(got["file"]).resolve().is_relative_to(site.resolve())
    assert not any((p / "cli_configs").exists() for p in Path(got["file"]).resolve().parents)
    assert got["settings"] == json.loads(json.dumps(bench.SETTINGS))


def test_paired_differences_and_verdicts():
    shipped = {"seeds": [0, 1, 2], "val": [0.5, 0.6, 0.7]}
    # +0.2 on each common seed; seed 5 has no partner
    variant = {"seeds": [2, 0, 1, 5], "val": [0.9, 0.7, 0.8, 0.1]}
    mean, se, n = paired_difference(variant, shipped, "val")
    assert n == 3 and mean == pytest.approx(0.2) and se == pytest.approx(0.0, abs=1e-12)
    assert paired_verdict(mean, se, n) == "better" and paired_verdict(-mean, se, n) == "worse"
    noisy = {"seeds": [0, 1, 2], "val": [0.7, 0.4, 0.8]}  # differences +0.2, -0.2, +0.1
    mean, se, n = paired_difference(noisy, shipped, "val")
    assert se == pytest.approx(np.std([0.2, -0.2, 0.1], ddof=1) / np.sqrt(3))
    assert paired_verdict(mean, se, n) == "no measurable difference"
    # the verdict is scipy's paired t-test at 5% (two-sided)
    a, b = np.array([0.61, 0.7, 0.64, 0.58]), np.array([0.5, 0.55, 0.6, 0.52])
    mean, se, n = paired_difference(
        {"seeds": [0, 1, 2, 3], "val": list(a)}, {"seeds": [0, 1, 2, 3], "val": list(b)}, "val"
    )
    assert (paired_verdict(mean, se, n) == "better") == (ttest_rel(a, b).pvalue < 0.05 and mean > 0)
