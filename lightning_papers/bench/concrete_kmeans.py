"""Benchmark of concrete k-means on development and held-out tables (NMI / ACC / ARI, mean ± std over seeds).

Protocol: every default of :class:`~lightning_papers.concrete_kmeans.ConcreteKMeansClusterer` was chosen on
the DEVELOPMENT tables only (:func:`development_grid` reruns that choice); the goals are scored on HELD_OUT
tables that played no part in it. Fit-time choices inside the estimator are unsupervised.

Rows (all through the estimator, default settings unless the row says otherwise; the deep baselines share
its embedding code, autoencoder, budget and pretrained weights per seed):

* k-means on the raw input (scikit-learn, 10 restarts);
* two-step: the same autoencoder trained ``pretrain + joint`` epochs on reconstruction, then k-means;
* IDEC (DEC's KL loss + reconstruction) and DCN-style (hard assignments, running-mean centroids);
* concrete k-means with every default (3 runs, each with joint training started at scikit-learn's KMeans
  partition of the input, and the stability floor), run exactly as a user's ``fit(X)`` (its own pretraining
  per run); one such anchored run without the floor; one run from the paper's initialisation (k-means++ on
  the pretrained embedding) without the floor;
* the paper's estimator without our skip path, and our earlier scale-invariant variant (no code normalisation);
* the literal estimator on the raw, unnormalised code (ablation: it collapses).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lightning_papers.bench.report import BenchReport, markdown_table, mean_std

__all__ = ["AS_USER", "LABELS", "ROWS", "Settings", "development_grid", "run", "run_table"]

PAPER_NOTE = (
    "Paper (Gao et al., ICASSP 2020; 15 repetitions, DEC's d-500-500-2000-10 autoencoder): MNIST NMI 0.814, "
    "USPS NMI 0.707 / ACC 72.1%, 20 Newsgroups ACC 47.3% (its ACC is cluster purity). Those datasets need local "
    "files (configs `cli_configs/concrete_kmeans/{mnist,usps,news20}.yaml`); they were not run here."
)

# baselines and ablations: one run's own partition, no floor, centroids from k-means on the embedding (their
# papers' initialisation, not our anchoring at the input's k-means partition)
OFF = {"floor": "off", "n_init": 1, "centroid_init": "embedding"}
AS_USER = ("concrete",)  # rows fitted exactly as a user's fit(X): no pretraining shared with the other rows
ROWS: dict[str, dict[str, Any]] = {
    "kmeans_raw": {},
    "two_step": {"variant": "two_step", **OFF},
    "dec": {"variant": "dec", **OFF},
    "dcn": {"variant": "dcn", **OFF},
    "concrete": {},
    "concrete_anchored_run": {"floor": "off", "n_init": 1},
    "concrete_embedding_init": {**OFF},
    "concrete_paper": {"skip_dim": 0, "learned_weight": 1.0, "objective": "quantization", **OFF},
    "concrete_scale_invariant": {"skip_dim": 0, "embedding_norm": "none", "normalize": True,
                                 "objective": "distortion", "logit_scale": 10.0, **OFF},
    "concrete_literal": {"skip_dim": 0, "embedding_norm": "none", "normalize": False,
                         "objective": "quantization", "logit_scale": 1.0, **OFF},
}
LABELS = {
    "kmeans_raw": "k-means on the raw input",
    "two_step": "two-step AE + k-means (same AE, budget)",
    "dec": "IDEC (DEC loss + reconstruction)",
    "dcn": "DCN-style (hard, running-mean centroids)",
    "concrete": "**concrete k-means (defaults)**",
    "concrete_anchored_run": "concrete, one run anchored at input k-means (no floor)",
    "concrete_embedding_init": "concrete, one run from k-means++ on the embedding (no floor)",
    "concrete_paper": "concrete, paper's literal loss + scale fix, no skip path",
    "concrete_scale_invariant": "concrete, earlier scale-invariant variant",
    "concrete_literal": "concrete, literal on unnormalised code (ablation)",
}


@dataclass
class Settings:
    """Knobs of one benchmark run (the defaults are what the committed table uses)."""

    seeds: tuple[int, ...] = (0, 1, 2)
    tables: tuple[str, ...] = ()  # empty: DEVELOPMENT + HELD_OUT
    rows: tuple[str, ...] = tuple(ROWS)
    overrides: dict[str, Any] = field(default_factory=dict)  # applied to every deep row (e.g. fewer epochs)


def _estimator(n_clusters: int, seed: int, params: dict[str, Any]):
    from lightning_papers.concrete_kmeans import ConcreteKMeansClusterer

    return ConcreteKMeansClusterer(n_clusters=n_clusters, random_state=seed, **params)


def run_table(x: np.ndarray, y: np.ndarray, seed: int, rows: dict[str, dict[str, Any]],
              overrides: dict[str, Any] | None = None) -> dict[str, dict[str, float]]:
    """Every row on one table and seed: ``{row: {"nmi", "acc", "ari", "seconds"}}``.

    Rows with the same ``embedding_norm`` share one pretraining (the skip path is refit per row), except
    :data:`AS_USER` rows, which run ``fit(X)`` from scratch like a user's call.
    """
    import torch
    from sklearn.cluster import KMeans

    from lightning_papers.metrics import clustering_scores

    torch.set_num_threads(1)
    k = int(y.max()) + 1
    overrides = dict(overrides or {})
    out: dict[str, dict[str, float]] = {}
    pretrained: dict[str, tuple[dict, float]] = {}
    for name, spec in rows.items():
        t0 = time.perf_counter()
        if name == "kmeans_raw":
            pred = KMeans(k, n_init=10, random_state=seed).fit_predict(x)
            out[name] = {**clustering_scores(pred, y), "seconds": time.perf_counter() - t0}
            continue
        params = {**overrides, **spec}
        if name in AS_USER:
            est = _estimator(k, seed, params).fit(x)
            out[name] = {**clustering_scores(est.labels_, y), "seconds": time.perf_counter() - t0,
                         "input_won": float(est.selected_ == "input"),
                         **{f"stability_{c}": v for c, v in est.selection_scores_.items()}}
            continue
        norm = str(params.get("embedding_norm", "default"))
        if norm not in pretrained:
            pre = _estimator(k, seed, {**params, "variant": "two_step", "epochs": 0, "skip_dim": 0}).fit(x)
            pretrained[norm] = (pre.model_.state_dict(), time.perf_counter() - t0)
            t0 = time.perf_counter()
        state, pre_seconds = pretrained[norm]
        est = _estimator(k, seed, params).fit(x, pretrained=state)
        out[name] = {**clustering_scores(est.labels_, y), "seconds": pre_seconds + time.perf_counter() - t0,
                     "input_won": float(getattr(est, "selected_", "learned") == "input")}
    return out


def _collect(settings: Settings, progress: bool = True) -> dict[str, list[dict[str, dict[str, float]]]]:
    from lightning_papers.concrete_kmeans.datasets import TABLES, load_table

    rows = {r: ROWS[r] for r in settings.rows}
    results: dict[str, list] = {}
    log = logging.getLogger("lightning.pytorch")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        for table in settings.tables or TABLES:
            x, y = load_table(table)
            results[table] = []
            for seed in settings.seeds:
                t0 = time.perf_counter()
                results[table].append(run_table(x, y, seed, rows, settings.overrides))
                if progress:
                    print(f"  {table} seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
    finally:
        log.setLevel(level)
    return results


def _mean(results, table: str, row: str, metric: str = "nmi") -> float:
    return float(np.mean([r[row][metric] for r in results[table]]))


def development_grid(grid: list[dict[str, Any]] | None = None, seeds: tuple[int, ...] = (0, 1, 2),
                     extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Rerun the choice of defaults: estimator overrides scored on the DEVELOPMENT tables only (never HELD_OUT).

    Returns one record per grid point, best mean NMI first: ``{"params", "nmi", "vs_kmeans", "per_table"}``.
    The default ``grid`` is the last round that fixed the committed defaults.
    """
    from lightning_papers.concrete_kmeans.datasets import DEVELOPMENT, load_table

    if grid is None:  # the last round (earlier rounds: logit scale, objective, weight, skip path; method card)
        anchored = {"floor": "off", "n_init": 1, "centroid_init": "input_kmeans"}
        grid = [{"floor": "off", "n_init": 1, "centroid_init": "embedding"},
                {**anchored, "refine": "best"}, {**anchored, "refine": "learned"},
                {**anchored, "refine": "learned", "tau_start": 0.3}, {**anchored, "refine": "learned", "epochs": 20},
                {**anchored, "refine": "learned", "tau_start": 0.3, "epochs": 20}]
    rows = {"kmeans_raw": {}, **{f"g{i}": g for i, g in enumerate(grid)}}
    results = {}
    for table in DEVELOPMENT:
        x, y = load_table(table)
        results[table] = [run_table(x, y, s, rows, extra) for s in seeds]
    records = []
    for i, g in enumerate(grid):
        per_table = {t: round(_mean(results, t, f"g{i}"), 4) for t in DEVELOPMENT}
        kmeans_nmi = {t: _mean(results, t, "kmeans_raw") for t in DEVELOPMENT}
        records.append({"params": g, "nmi": float(np.mean(list(per_table.values()))),
                        "vs_kmeans": float(np.mean([per_table[t] - kmeans_nmi[t] for t in DEVELOPMENT])),
                        "per_table": per_table})
    return sorted(records, key=lambda r: -r["nmi"])


def run(quick: bool = False, out_dir: Path | None = None, settings: Settings | None = None) -> BenchReport:
    """Run the benchmark (``quick``: one seed, three tables, fewer epochs and rows; same code path)."""
    from lightning_papers.concrete_kmeans import ConcreteKMeansClusterer
    from lightning_papers.concrete_kmeans.datasets import DEVELOPMENT, HELD_OUT

    if settings is None:
        settings = Settings(seeds=(0,), tables=("digits", "wine", "iris", "breast_cancer"),
                            rows=("kmeans_raw", "two_step", "dec", "concrete", "concrete_anchored_run",
                                  "concrete_embedding_init"),
                            overrides={"pretrain_epochs": 30, "epochs": 30}) if quick else Settings()
    results = _collect(settings)
    tables = list(results)
    dev = [t for t in tables if t in DEVELOPMENT]
    held = [t for t in tables if t in HELD_OUT]
    rows_out = []
    for row in settings.rows:
        cells = [LABELS[row]]
        for t in tables:
            cells.append(mean_std([r[row]["nmi"] for r in results[t]]))
        cells.append(f"{np.mean([_mean(results, t, row) for t in dev]):.3f}" if dev else "–")
        cells.append(f"{np.mean([_mean(results, t, row) for t in held]):.3f}" if held else "–")
        ratios = [r[row]["seconds"] / r["two_step"]["seconds"] for t in tables for r in results[t]]
        cells.append(f"{np.mean(ratios):.2f}")
        rows_out.append(cells)
    columns = ["method", *[f"{t} ({'dev' if t in DEVELOPMENT else 'held-out'})" for t in tables],
               "dev mean", "held-out mean", "time / two-step"]

    nmi = lambda t, r: _mean(results, t, r)  # noqa: E731
    floor_fail = [t for t in tables if nmi(t, "concrete") < nmi(t, "kmeans_raw") - 0.01]
    floor_ok = not floor_fail
    ours_held = float(np.mean([nmi(t, "concrete") for t in held])) if held else float("nan")
    two_held = float(np.mean([nmi(t, "two_step") for t in held])) if held else float("nan")
    dec_held = float(np.mean([nmi(t, "dec") for t in held])) if held else float("nan")
    gain_ok = ours_held >= two_held + 0.02
    dec_ok = ours_held >= dec_held
    verdict = [
        f"**Goal 1 (every table: concrete NMI >= raw k-means - 0.01): {'met' if floor_ok else 'NOT met'}**"
        + ("" if floor_ok else f" on {', '.join(floor_fail)}")
        + ": " + ", ".join(f"{t} {nmi(t, 'concrete'):.3f} vs {nmi(t, 'kmeans_raw'):.3f}" for t in tables) + ".",
        f"**Goal 2 (held-out mean >= two-step + 2 NMI points): {'met' if gain_ok else 'NOT met'}** — "
        f"{ours_held:.3f} vs {two_held:.3f} ({100 * (ours_held - two_held):+.1f} points).",
        f"**Goal 3 (held-out mean >= DEC-style): {'met' if dec_ok else 'NOT met'}** — {ours_held:.3f} vs "
        f"IDEC {dec_held:.3f}.",
    ]
    detail_rows = []
    for t in tables:
        for row in settings.rows:
            vals = {m: [r[row][m] for r in results[t]] for m in ("nmi", "acc", "ari", "seconds")}
            detail_rows.append([t, LABELS[row], mean_std(vals["nmi"]), mean_std(vals["acc"]),
                                mean_std(vals["ari"]), mean_std(vals["seconds"], 1)])
    defaults = ConcreteKMeansClusterer().get_params()
    shown = {k: defaults[k] for k in ("latent_dim", "hidden", "pretrain_epochs", "epochs", "batch_size", "lr",
                                      "objective", "logit_scale", "hard", "skip_dim", "learned_weight",
                                      "cluster_weight", "tau_start", "tau_end", "centroid_init", "refine",
                                      "n_init", "floor", "standardize")}
    has = lambda row: row in settings.rows  # noqa: E731
    won = {t: int(sum(r["concrete"].get("input_won", 0.0) for r in results[t])) for t in tables} if has(
        "concrete") else {}
    stab = {t: {c: float(np.mean([r["concrete"].get(f"stability_{c}", np.nan) for r in results[t]]))
                for c in ("learned", "input")} for t in tables} if has("concrete") else {}
    floor_note = (
        "What the default does (labels never seen): each of its `n_init=3` runs starts joint training at "
        "scikit-learn's KMeans partition (10 restarts, the run's seed) of the standardised input, the centroids "
        "being the mean embedding of each of its clusters (`centroid_init=\"input_kmeans\"`), and refines it; "
        "then the stability floor keeps the learned partition only if the 3 runs agree with each other (mean "
        "pairwise ARI) strictly more than 3 scikit-learn KMeans runs on the input do, else returns that k-means. "
        "Input k-means chosen on (of " + str(len(settings.seeds)) + " seeds): "
        + ", ".join(f"{t} {won[t]}" for t in tables) + ". Mean stability, learned runs vs input k-means runs: "
        + ", ".join(f"{t} {stab[t]['learned']:.2f} vs {stab[t]['input']:.2f}" for t in tables) + ". "
        + ("One anchored run without the floor vs raw k-means: "
           + ", ".join(f"{t} {nmi(t, 'concrete_anchored_run'):.3f} vs {nmi(t, 'kmeans_raw'):.3f}" for t in tables)
           + ". " if has("concrete_anchored_run") else "")
        + "The anchoring was chosen on the development tables only (3 seeds, `development_grid()`, numbers in the "
        "method card), where one anchored run held the floor on every table; a lower start temperature, fewer "
        "joint epochs and refining only the learned centroids were no better there. The floor stays on by "
        "default because one anchored run missed it on the held-out noisy-blobs test table "
        "(tests/concrete_kmeans: NMI 0.347 vs k-means 0.357, 20 + 20 epochs); nothing was re-tuned after that. "
        "Iris had been looked at once before (an earlier floor rule missed it), so it is not untouched. Earlier "
        "defaults: the same floor over runs from k-means++ on the embedding returned k-means on all 21 "
        "table-seeds; a scatter comparison (`floor=\"scatter\"`) never chose k-means (0 of 21). The default row "
        "runs exactly as a user's `fit(X)` (each run pretrains its own autoencoder); the other deep rows share one "
        "pretraining per table and seed; the deep baselines and ablations use their papers' initialisation "
        "(k-means on the pretrained embedding)."
    ) if has("concrete") else ""
    why = (
        "Why goal 1 falls short where it does: the learned runs there agreed with each other more than the input "
        "k-means runs did, yet their partition is further from the labels (stability sees no labels). Tried on "
        "the development tables only: a larger learned share (0.3, 0.5, 1.0: worse), a batch-normalised "
        "(whitened) code (worse), a trainable skip path (worse), a higher clustering weight (3: no better), a "
        "scatter floor (never chose k-means), starting at the input's k-means partition with a lower start "
        "temperature or fewer joint epochs (no better)."
    ) if not floor_ok else ""
    wins = sum(nmi(t, "concrete") > nmi(t, "two_step") for t in tables)
    why += (" " if why else "") + (f"The default row beats the two-step baseline on the same embedding on {wins} "
                                   f"of {len(tables)} tables.")
    notes = "\n".join([
        *[v + "\n" for v in verdict],
        *([floor_note, ""] if floor_note else []),
        *([why, ""] if why else []),
        f"Development tables (defaults chosen here): {', '.join(dev) or 'none in this run'}. Held-out tables "
        f"(no choice looked at them): {', '.join(held) or 'none in this run'}. NMI mean ± std over seeds "
        f"{list(settings.seeds)}; time / two-step: a row's wall time (its share of the pretraining included) over "
        "the two-step row's, same table and seed (CPU, one thread).",
        "",
        f"Estimator defaults: {shown}. Overrides in this run: {settings.overrides or 'none'}.",
        "",
        "NMI / ACC (Hungarian) / ARI and seconds per table:",
        "",
        markdown_table(["table", "method", "NMI", "ACC", "ARI", "seconds"], detail_rows),
        "",
        PAPER_NOTE,
    ])
    return BenchReport(
        name="concrete_kmeans",
        title="Concrete k-means vs k-means, two-step, IDEC and DCN on development and held-out tables (NMI)",
        columns=columns,
        rows=rows_out,
        notes=notes,
        headline=(f"held-out NMI {ours_held:.3f} vs two-step {two_held:.3f}, IDEC {dec_held:.3f}; "
                  f"floor vs k-means {'met' if floor_ok else 'not met'}"),
        goal_met=bool(floor_ok and gain_ok and dec_ok) if held else None,
    )
