"""Benchmark of the evolved Taylor loss against CE and hand-designed robust losses under label noise.

Digits and MNIST-1D; clean, symmetric 20/40/60% and asymmetric 40% training-label noise; the same MLP,
optimiser and budget for every loss (full-batch Adam, :func:`lightning_papers.taylor_loss.train_and_evaluate`,
the very loop the search used). Reported: clean test accuracy mean ± std over seeds, and training time per
epoch relative to CE measured in the same run.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from torch import nn

from lightning_papers.bench.report import BenchReport, mean_std

SETTINGS = [(None, 0.0), ("symmetric", 0.2), ("symmetric", 0.4), ("symmetric", 0.6), ("asymmetric", 0.4)]
DATASETS = ["digits", "mnist1d"]


def _losses():
    from lightning_papers.taylor_loss import (
        GeneralizedCrossEntropy,
        MeanAbsoluteError,
        NCEandRCE,
        SymmetricCrossEntropy,
        TaylorLoss,
    )

    return {
        "CE": nn.CrossEntropyLoss,
        "MAE": MeanAbsoluteError,
        "GCE q=0.7": lambda: GeneralizedCrossEntropy(0.7),
        "SCE 0.1/1": lambda: SymmetricCrossEntropy(0.1, 1.0),
        "NCE+RCE": lambda: NCEandRCE(1.0, 1.0),
        "Taylor-CE deg 4 (unsearched)": lambda: TaylorLoss(preset="ce4"),
        "TaylorLoss (shipped)": TaylorLoss,
    }


BASELINES = ["CE", "MAE", "GCE q=0.7", "SCE 0.1/1", "NCE+RCE"]
OURS = "TaylorLoss (shipped)"


def _setting_name(dataset: str, noise_type: str | None, rate: float) -> str:
    return f"{dataset} {'clean' if not rate else f'{noise_type[:4]} {int(round(rate * 100))}%'}"


def run(quick: bool = False, out_dir: Path | None = None) -> BenchReport:
    """Run the grid (3 seeds × 200 epochs; quick: 1 seed × 60 epochs) and return the report."""
    from tqdm.auto import tqdm

    from lightning_papers.taylor_loss import SearchTask, load_preset, load_task_data, train_and_evaluate

    seeds = [0] if quick else [0, 1, 2]
    epochs = 60 if quick else 200
    hidden, lr, n_mnist = (128,), 1e-2, 4000
    losses = _losses()
    acc: dict[tuple[str, str], list[float]] = {}
    spe: dict[str, list[float]] = {k: [] for k in losses}
    settings = [(ds, nt, r) for ds in DATASETS for nt, r in SETTINGS]
    bar = tqdm(total=len(settings) * len(seeds) * len(losses), desc="bench taylor_loss", unit="run")
    start = time.perf_counter()
    for ds, nt, rate in settings:
        name = _setting_name(ds, nt, rate)
        for seed in seeds:
            data = load_task_data(SearchTask(ds, nt if rate else None, rate, hidden, seed, n_mnist))
            for loss_name, make in losses.items():
                r = train_and_evaluate(make(), data, hidden=hidden, epochs=epochs, lr=lr, seed=seed)
                acc.setdefault((name, loss_name), []).append(r["test_acc"])
                spe[loss_name].append(r["seconds_per_epoch"])
                bar.update(1)
    bar.close()
    total = time.perf_counter() - start

    names = list(losses)
    columns = ["setting", *names]
    rows = []
    for ds, nt, rate in settings:
        s = _setting_name(ds, nt, rate)
        rows.append([s, *[mean_std(acc[(s, k)]) for k in names]])
    setting_names = [_setting_name(*x) for x in settings]
    avg = {k: float(np.mean([np.mean(acc[(s, k)]) for s in setting_names])) for k in names}
    rows.append(["**average over settings**", *[f"{avg[k]:.3f}" for k in names]])
    ce_spe = np.asarray(spe["CE"])
    ratio = {k: float(np.mean(np.asarray(spe[k]) / ce_spe)) for k in names}
    rows.append(["time / epoch vs CE", *[f"{ratio[k]:.2f}x" for k in names]])

    # goals of issue 4
    def m(setting, k):
        return float(np.mean(acc[(setting, k)]))

    g1 = {
        ds: m(_setting_name(ds, "symmetric", 0.4), OURS) - m(_setting_name(ds, "symmetric", 0.4), "CE")
        for ds in DATASETS
    }
    best_base = max(BASELINES, key=lambda k: avg[k])
    g2 = avg[OURS] - avg[best_base]
    g3 = {
        ds: m(_setting_name(ds, None, 0.0), OURS) - m(_setting_name(ds, None, 0.0), "CE") for ds in DATASETS
    }
    typical_std = float(
        np.mean(
            [
                np.std(acc[(s, k)], ddof=1) if len(seeds) > 1 else np.nan
                for s in setting_names
                for k in (OURS, best_base)
            ]
        )
    )
    tie = (
        f"; the margin is smaller than the typical per-setting seed std ({typical_std * 100:.1f} pts), so read it as a tie"
        if np.isfinite(typical_std) and abs(g2) < typical_std
        else ""
    )
    ok1, ok2, ok3 = all(v >= 0.10 for v in g1.values()), g2 >= 0.0, all(v >= -0.01 for v in g3.values())
    goal_met = ok1 and ok2 and ok3
    preset = load_preset("robust")

    def yn(ok):
        return "**met**" if ok else "**not met**"

    notes = f"""Clean **test** accuracy (mean ± std over {len(seeds)} seed(s); seeds set the split, the label noise
and the initialisation). Every loss trains the same MLP (hidden {list(hidden)}, ReLU) with full-batch Adam
(lr {lr}) for {epochs} epochs on the noisy training labels, no early stopping, features standardised; digits:
1,797 images (70/15/15 split); MNIST-1D: {n_mnist} procedurally generated signals (our re-generation). Asymmetric
noise uses the MNIST class map 7→1, 2→7, 5↔6, 3→8. Time per epoch is the training wall time per epoch divided by
CE's on the same run, averaged over all runs ({total:.0f} s in total on one CPU thread).

The shipped preset `robust` = {preset["coefficients"]} (powers 1..{len(preset["coefficients"])} of 1 − p_y) was
found by **our own** CMA-ES search (`lightning-papers search-loss --config cli_configs/taylor_loss/search_digits.yaml`):
fitness = clean-validation accuracy on digits and MNIST-1D (2,000 samples) at symmetric 20% and 60% noise, with
split/noise/init seed 100 — different seeds and samples from this benchmark, but the same two data distributions,
so this is **not** a cross-dataset transfer test like the paper's. The paper's own coefficients were not available
to us. "Taylor-CE deg 4 (unsearched)" is CE's Taylor series cut at degree 4, to show what the search adds.
A second search with 4,000-sample MNIST-1D (same recipe otherwise) found [0.764, −0.034, 0.126, −0.076]; on
selection seeds 10–11 (validation split, never used in this table) it averaged 0.640 vs 0.649 for the first,
so the first is shipped.

Goals of issue 4 (this run):
- TaylorLoss ≥ CE + 10 points at 40% symmetric noise: {yn(ok1)} ({", ".join(f"{k}: {v * 100:+.1f} pts" for k, v in g1.items())}).
- TaylorLoss ≥ best hand-designed baseline on average over settings: {yn(ok2)} (TaylorLoss {avg[OURS]:.3f} vs best baseline {best_base} {avg[best_base]:.3f}, {g2 * 100:+.1f} pts{tie}).
- No loss beyond 1 point at 0% noise vs CE: {yn(ok3)} ({", ".join(f"{k}: {v * 100:+.1f} pts" for k, v in g3.items())}).

Paper reference (Gao et al., ICCV 2021): results are on CIFAR-10/100 and real-noise datasets with CNNs, not on
these embedded datasets, so no number here is directly comparable."""
    headline = (
        f"avg clean acc {avg[OURS]:.3f} vs best baseline {best_base} {avg[best_base]:.3f}; "
        f"sym40 vs CE {', '.join(f'{k} {v * 100:+.1f}pt' for k, v in g1.items())}"
    )
    return BenchReport(
        name="taylor_loss",
        title="Evolved Taylor loss vs CE and robust losses under label noise (clean test accuracy)",
        columns=columns,
        rows=rows,
        notes=notes,
        headline=headline,
        goal_met=goal_met,
    )
