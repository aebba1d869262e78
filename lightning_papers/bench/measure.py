"""Measurement helpers shared by the benchmarks: interleaved step timings and paired comparisons over seeds."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from lightning_papers.bench.report import mean_std
from lightning_papers.validation import check_each

__all__ = ["interleaved_times", "paired_difference", "paired_verdict", "ratio_mean_std", "training_step"]


def interleaved_times(
    steps: Mapping[str, Callable[[], None]], rounds: int, per_round: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Seconds per call of each ``name -> step()`` callable, measured in interleaved rounds.

    Every round times ``per_round`` calls of each setting in turn, so drifts of the machine's speed (other
    processes, thermal state) hit all settings alike; the per-round ratios then show the measurement's spread.

    Args:
        steps: the callables to time, by name.
        rounds: number of rounds (one entry per setting and round in the result).
        per_round: calls of each setting per round.
        warmup: untimed calls of each setting before the first round.

    Returns:
        ``name -> [seconds per call in round 1, round 2, ...]``.

    Example::

        >>> times = interleaved_times({"sleep": lambda: time.sleep(0.001), "noop": lambda: None}, rounds=3, per_round=2)
        >>> len(times["sleep"]), all(s > n for s, n in zip(times["sleep"], times["noop"]))
        (3, True)
    """
    check_each((rounds >= 1, f"rounds must be >= 1, got {rounds}"), (per_round >= 1, f"per_round must be >= 1, got {per_round}"))
    for step in steps.values():
        for _ in range(warmup):
            step()
    out: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(per_round):
                step()
            out[name].append((time.perf_counter() - start) / per_round)
    return out


def training_step(model, params, inputs, labels, lr: float = 1e-4) -> Callable[[], None]:
    """A closure doing one AdamW step of ``model`` on a fixed batch (cross-entropy), for :func:`interleaved_times`.

    Example::

        >>> import torch
        >>> net = torch.nn.Linear(4, 3)
        >>> step = training_step(net, net.parameters(), torch.zeros(2, 4), torch.tensor([0, 1]))
        >>> before = net.bias.detach().clone(); step(); bool((net.bias != before).any())
        True
    """
    import torch

    opt = torch.optim.AdamW(params, lr=lr)

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(model(inputs), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def paired_difference(a: Mapping, b: Mapping, what: str) -> tuple[float, float, int]:
    """Mean and standard error of ``a[what] - b[what]`` over the seeds both were run with.

    Args:
        a, b: results with ``"seeds"`` (list) and ``what`` (one value per seed, in the same order).
        what: the metric to compare.

    Returns:
        ``(mean difference, its standard error (inf for one seed), number of common seeds)``.

    Example::

        >>> mean, se, n = paired_difference({"seeds": [0, 1, 2], "uar": [0.6, 0.7, 0.8]},
        ...                                 {"seeds": [1, 2], "uar": [0.5, 0.7]}, "uar")
        >>> round(mean, 3), round(se, 3), n
        (0.15, 0.05, 2)
    """
    common = [s for s in a["seeds"] if s in b["seeds"]]
    d = np.array([a[what][a["seeds"].index(s)] - b[what][b["seeds"].index(s)] for s in common])
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("inf")
    return float(d.mean()), se, len(d)


def paired_verdict(mean: float, se: float, n: int) -> str:
    """``"better"`` / ``"worse"`` when a two-sided paired t-test over ``n`` seeds rejects "no difference" at 5%.

    Example::

        >>> paired_verdict(0.1, 0.01, 6), paired_verdict(-0.1, 0.01, 6), paired_verdict(0.01, 0.05, 6)
        ('better', 'worse', 'no measurable difference')
    """
    from scipy.stats import t

    if n < 2:
        return "no measurable difference"
    bound = float(t.ppf(0.975, n - 1)) * se
    if mean > bound:
        return "better"
    if mean < -bound:
        return "worse"
    return "no measurable difference"


def ratio_mean_std(numerator: Sequence[float], denominator: Sequence[float]) -> tuple[float, str]:
    """Per-round ratios of two interleaved timing series: ``(mean, "mean ± std")``.

    Example::

        >>> ratio_mean_std([2.0, 3.0], [1.0, 1.0])
        (2.5, '2.50 ± 0.71')
    """
    ratios = np.array(numerator) / np.array(denominator)
    return float(ratios.mean()), mean_std(ratios, 2)
