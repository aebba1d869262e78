"""Benchmark of the evolved Taylor loss: transfer to held-out tasks, against CE, robust losses and PolyLoss.

Two sections. **Held-out tasks** (the headline, the paper's claim): datasets, architectures and a noise type
that the preset's search never saw (:func:`~lightning_papers.taylor_loss.heldout_tasks`). **Search tasks**: the
development pool's datasets and architectures (:func:`~lightning_papers.taylor_loss.search_tasks`) on other
seeds (other splits, flips and initialisations) than the search used. Every loss trains the same network with
the same full-batch Adam budget as the search (:func:`~lightning_papers.taylor_loss.train_and_evaluate`);
reported: clean **test** accuracy mean ± std over seeds and training time per epoch relative to CE.
"""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path

import numpy as np

from lightning_papers.bench.report import BenchReport, markdown_table, mean_std

__all__ = ["make_loss", "run"]

OURS = "TaylorLoss (shipped)"
CONTROL = "CE series deg 5 (unsearched)"
HAND = ["CE", "MAE", "GCE q=0.7", "SCE 0.1/1", "NCE+RCE", "Poly-1 ε=1"]
LOSS_NAMES = [*HAND, CONTROL, OURS]
EPOCHS, LR = 120, 1e-2  # the search's training recipe (cli_configs/taylor_loss/search_randomised.yaml)


def make_loss(name: str):
    from torch import nn

    from lightning_papers.taylor_loss import (
        GeneralizedCrossEntropy,
        MeanAbsoluteError,
        NCEandRCE,
        PolyLoss,
        SymmetricCrossEntropy,
        TaylorLoss,
    )

    return {
        "CE": nn.CrossEntropyLoss,
        "MAE": MeanAbsoluteError,
        "GCE q=0.7": lambda: GeneralizedCrossEntropy(0.7),
        "SCE 0.1/1": lambda: SymmetricCrossEntropy(0.1, 1.0),
        "NCE+RCE": lambda: NCEandRCE(1.0, 1.0),
        "Poly-1 ε=1": lambda: PolyLoss(1.0),
        CONTROL: lambda: TaylorLoss(preset="ce5"),
        OURS: TaylorLoss,
    }[name]()


_CACHE: dict[str, object] = {}

# why the clean goal fails: measured on the development pool only (MNIST-1D MLP, clean, seed 0), not held-out data
CLEAN_WHY = """ Why: the searched shape
  weights a sample's label-logit gradient by P'(u)·p_y relative to CE (u = 1 − p_y): 2.7 at u = 0.02, 0.87 at
  0.25, 0.21 at 0.5, 0.10 at 0.9. Under Adam (scale-invariant) the update is dominated by almost-fitted samples
  and uncertain ones are left alone — the mechanism that ignores flipped labels also abandons genuinely hard
  clean samples. On the development task MNIST-1D (clean) training-set accuracy stalls at 0.76 after 120 epochs
  and 0.78 after 480 (CE: 1.00), so a longer budget does not remove it, and rescaling the slope (e.g. to match
  CE's gradient at p_y = 1/C) cannot either, since Adam divides a global scale out. Closing the gap needs a
  different shape: a search whose pool weights clean, hard tasks more (or a fitness relative to CE per task)."""


def _job(args):
    """All losses on one task instance (one process, one thread): accuracies and seconds per epoch."""
    import torch

    from lightning_papers.taylor_loss.tasks import build_model, load_task_data, train_and_evaluate

    task, names = args
    torch.set_num_threads(1)
    if task.key() not in _CACHE:
        _CACHE[task.key()] = load_task_data(task)
    data = _CACHE[task.key()]
    make = functools.partial(build_model, task, data.input_shape, data.num_classes)
    out = {}
    for name in names:
        r = train_and_evaluate(make_loss(name), data, make, epochs=EPOCHS, lr=LR, seed=task.seed)
        out[name] = (r["test_acc"], r["seconds_per_epoch"])
    return task.name, task.seed, out


def _section(results, settings, names):
    """Rows (per setting: mean ± std per loss), per-loss setting means and per-instance time ratios vs CE."""
    acc = {(s, k): [r[k][0] for (name, _), r in results.items() if name == s] for s in settings for k in names}
    rows = [[s.replace("/", " "), *[mean_std(acc[(s, k)]) for k in names]] for s in settings]
    avg = {k: float(np.mean([np.mean(acc[(s, k)]) for s in settings])) for k in names}
    ratio = {k: float(np.mean([r[k][1] / r["CE"][1] for r in results.values()])) for k in names}
    rows.append(["**average over settings**", *[f"{avg[k]:.3f}" for k in names]])
    rows.append(["time / epoch vs CE", *[f"{ratio[k]:.2f}x" for k in names]])
    return rows, acc, avg, ratio


def run(quick: bool = False, out_dir: Path | None = None, workers: int = 2) -> BenchReport:
    """Run both sections (3 seeds; quick: 1 seed, fewer settings) in ``workers`` processes; return the report."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from lightning_papers.taylor_loss import heldout_tasks, load_preset, search_tasks

    seeds = [0] if quick else [0, 1, 2]
    held_noise = [(None, 0.0), ("symmetric", 0.4)] if quick else None
    held = heldout_tasks(seeds=seeds, noise=held_noise)
    dev = (search_tasks(seeds=seeds, names=["digits-mlp"], noise=[("symmetric", 0.4)]) if quick else
           search_tasks(seeds=seeds, noise=[(None, 0.0), ("symmetric", 0.4), ("symmetric", 0.6), ("pairflip", 0.3)]))
    names = LOSS_NAMES
    start = time.perf_counter()
    jobs = [(t, names) for t in held + dev]
    # CNN tasks first: the longest jobs should not be the last ones
    jobs.sort(key=lambda j: j[0].model != "ConvNet")
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        results = {(n, s): r for n, s, r in pool.map(_job, jobs)}
    total = time.perf_counter() - start
    held_settings = list(dict.fromkeys(t.name for t in held))
    dev_settings = list(dict.fromkeys(t.name for t in dev))
    held_res = {k: v for k, v in results.items() if k[0] in held_settings}
    dev_res = {k: v for k, v in results.items() if k[0] in dev_settings}
    rows, acc, avg, ratio = _section(held_res, held_settings, names)
    dev_rows, _, dev_avg, _ = _section(dev_res, dev_settings, names)
    per_task_ratio = {d: float(np.mean([r[OURS][1] / r["CE"][1] for (n, _), r in held_res.items()
                                        if n.split("/")[0] == d]))
                      for d in dict.fromkeys(s.split("/")[0] for s in held_settings)}
    cnn = [r for (n, _), r in dev_res.items() if "cnn" in n]
    cnn_ratio = float(np.mean([r[OURS][1] / r["CE"][1] for r in cnn])) if cnn else math.nan

    def m(setting, k):
        return float(np.mean(acc[(setting, k)]))

    datasets = list(dict.fromkeys(s.split("/")[0] for s in held_settings))
    best_hand = max(HAND, key=lambda k: avg[k])
    g_avg = avg[OURS] - avg[best_hand]
    g_sym = {d: m(f"{d}/sym40", OURS) - m(f"{d}/sym40", "CE") for d in datasets}
    g_clean = {d: m(f"{d}/clean", OURS) - m(f"{d}/clean", "CE") for d in datasets}
    g_ctrl = avg[OURS] - avg[CONTROL]
    ok = {
        "avg": g_avg >= 0.01,
        "sym": all(v >= 0.10 for v in g_sym.values()),
        "clean": all(v >= -0.01 for v in g_clean.values()),
        "ctrl": g_ctrl >= 0.0,
        "time": ratio[OURS] <= 1.1,
    }
    stds = [np.std(acc[(s, k)], ddof=1) for s in held_settings for k in (OURS, best_hand) if len(seeds) > 1]
    typical = float(np.mean(stds)) if stds else math.nan

    def yn(flag):
        return "**met**" if flag else "**not met**"

    def pts(d):
        return ", ".join(f"{k}: {v * 100:+.1f} pts" for k, v in d.items())

    preset = load_preset("robust")
    noise_note = ("clean, symmetric 40 %" if quick else "clean, symmetric 40 %, asymmetric 40 %")
    notes = f"""**Held-out tasks** (above; never used by the search): breast cancer (scikit-learn, 2 classes, 569
samples) with a 64-64 GELU MLP; a 10-class `make_classification` hypercube task (30 features, 2,000 samples)
with a 128-128 GELU MLP; a 6-class Gaussian-quantiles task (concentric shells, 8 features) with a 128-64 tanh
MLP; {noise_note} training-label noise. "Asymmetric" (class-conditional: the MNIST map for 10 classes, else every
even class flips into the next) is a noise type the search never used. Clean **test** accuracy, mean ± std over
{len(seeds)} seed(s) (a seed sets the split, the flips and the initialisation); full-batch Adam, lr {LR}, {EPOCHS}
epochs, no early stopping, inputs standardised — the search's own recipe. Time per epoch is each run's training
wall time per epoch over CE's on the same task instance, averaged ({total:.0f} s for the whole benchmark, 2
processes × 1 thread).

### Search (development) tasks — same datasets and architectures as the search, other seeds

{markdown_table(["setting", *names], dev_rows)}

### Goals on held-out tasks (this run)
- TaylorLoss ≥ best hand-designed baseline + 1 point on average: {yn(ok["avg"])} (TaylorLoss {avg[OURS]:.3f} vs {best_hand} {avg[best_hand]:.3f}, {g_avg * 100:+.1f} pts{"" if math.isnan(typical) else f"; typical per-setting seed std {typical * 100:.1f} pts"}).
- TaylorLoss ≥ CE + 10 points at 40 % symmetric noise on every dataset: {yn(ok["sym"])} ({pts(g_sym)}).
- TaylorLoss ≤ 1 point below CE at 0 % noise: {yn(ok["clean"])} ({pts(g_clean)}).{"" if ok["clean"] else CLEAN_WHY}
- TaylorLoss ≥ the unsearched truncated series (CE's Taylor series to degree 5): {yn(ok["ctrl"])} ({g_ctrl * 100:+.1f} pts on held-out, {(dev_avg[OURS] - dev_avg[CONTROL]) * 100:+.1f} pts on search tasks).
- Time per epoch ≤ 1.1x CE: {yn(ok["time"])} ({ratio[OURS]:.2f}x on the held-out MLPs{"" if math.isnan(cnn_ratio) else f", {cnn_ratio:.2f}x on the digits CNN"}; per
  held-out task {", ".join(f"{d} {v:.2f}x" for d, v in per_task_ratio.items())}). TaylorLoss runs a closed-form
  forward/backward (one log-softmax, ~a dozen kernels, gradient subnormals flushed to 0); CE is one fused C++
  op. On these tiny models (one full-batch step of 1–3 ms per epoch) the remaining cost is Python dispatch of
  those kernels (~0.1–0.2 ms per step), so the smallest task shows the largest ratio; it shrinks as models grow.

The shipped preset `robust` = {preset["coefficients"]} (powers 1..{len(preset["coefficients"])} of 1 − p_y; slope
weights {preset.get("gradient_weights")}) is **our own** CMA-ES search (`lightning-papers search-loss --config
cli_configs/taylor_loss/search_randomised.yaml`): every generation trained each candidate on 8 tasks drawn from
the 20-task development pool (digits MLP / CNN, MNIST-1D MLP, Gaussian blobs MLP × clean, symmetric 20/40/60 %,
pairflip 30 %; seed 100), fitness = clean validation accuracy. On that whole pool the searched loss scored
{preset.get("fitness")} vs {preset.get("control_fitness")} for its start, CE's degree-5 series. The paper's own
coefficients were not available to us. Paper reference (Gao et al., ICCV 2021): CIFAR-10/100 and real-noise data
with CNNs on GPUs — not these tasks, so no number here is directly comparable."""
    headline = (f"held-out avg clean acc {avg[OURS]:.3f} vs best baseline {best_hand} {avg[best_hand]:.3f}; "
                f"sym40 vs CE {', '.join(f'{k} {v * 100:+.1f}pt' for k, v in g_sym.items())}")
    return BenchReport(
        name="taylor_loss",
        title="Evolved Taylor loss on held-out tasks vs CE, robust losses and PolyLoss (clean test accuracy)",
        columns=["held-out setting", *names],
        rows=rows,
        notes=notes,
        headline=headline,
        goal_met=all(ok.values()),
    )
