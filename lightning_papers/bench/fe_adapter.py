"""Benchmark of FE-Adapter: ``lightning-papers bench fe_adapter`` -> ``benchmarks/results/fe_adapter.md``.

Part 1 (measured, one code path: ``FEAdapterClassifier`` + ``VideoEmotionDataModule`` + Lightning): the
synthetic multi-scale temporal task (order and distance of a smile and a frown) with the settings of
:data:`SETTINGS` (built in code, equal to ``cli_configs/fe_adapter/synthetic.yaml``), the same data,
epochs and optimizer for FE-Adapter (the shipped config), an ST-Adapter-style adapter (width D/2, one
static dilation-1 branch, biases) at >= 15x its parameters, the frame adapter, a linear probe and full
fine-tuning; then ablations of the FE design (dilation sets, dynamic vs static routing, placement,
bottleneck width, initialisation). Validation UAR (15% of the
clips) picks the design; test UAR (another 15%) is only reported. Training speed: interleaved repeated step
timings of FE-Adapter and full fine-tuning (tiny model and ViT-B/16).

Part 2 (counted from code): trainable parameters on CLIP ViT-B/16 at paper settings (224 px, 7 classes,
an adapter in each of the 12 blocks), built with ``pretrained=False`` (no download).

Runs go to two single-threaded worker processes (the benchmark machine has two cores).
"""

from __future__ import annotations

import copy
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from lightning_papers.bench.fe_adapter_costs import tiny_step_times, vitb_parameter_counts
from lightning_papers.bench.measure import paired_difference, paired_verdict, ratio_mean_std
from lightning_papers.bench.report import BenchReport, markdown_table, mean_std

__all__ = ["CHANCE", "FRESH_TEST", "QUICK_EPOCHS", "SETTINGS", "run", "settings", "settings_from_config"]

#: The benchmark's model / data settings, built in code so that ``bench`` needs no source checkout. They equal
#: ``cli_configs/fe_adapter/synthetic.yaml`` (a test checks it), so the table matches ``lightning-papers fit``.
SETTINGS: dict = {
    "model": {
        "backbone": "vit_tiny_patch16_224",
        "backbone_kwargs": {"patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2, "global_pool": "avg"},
        "img_size": 32, "num_frames": 8, "num_classes": 4, "head_dropout": 0.0, "warmup_fraction": 0.05,
        "adapter": {"bottleneck": 2, "dilations": [1, 2, 3], "dynamic": True, "router_hidden": 0,
                    "activation": "gelu", "init": "difference", "tap_std": 4.0, "padding": "replicate",
                    "bias": False, "position": "before"},
        "lr": 0.01, "weight_decay": 0.01,
    },
    "epochs": 30, "batch_size": 16, "val_fraction": 0.15, "test_fraction": 0.15,
    "synthetic": {"num_clips": 384, "clip_len": 8, "size": 32, "seed": 0},
}  # fmt: skip
QUICK_EPOCHS = 30
CHANCE = 0.25
#: a second, larger test set: clips from another generator seed, never seen in training or model selection
FRESH_TEST = {"num_clips": 320, "seed": 1}
#: seeds of the design comparisons the goals are about (method, placement, routing, dilation) and of the rest
MAIN_SEEDS, SEEDS = (0, 1, 2, 3, 4, 5), (0, 1, 2)


def settings() -> dict:
    """A copy of :data:`SETTINGS` (the benchmark's model / data settings).

    Example::

        >>> settings()["model"]["adapter"]["position"]
        'before'
    """
    return copy.deepcopy(SETTINGS)


def settings_from_config(path: str | Path) -> dict:
    """The settings of a ``lightning-papers fit`` YAML config in the layout of :data:`SETTINGS`."""
    import yaml

    cfg = yaml.safe_load(Path(path).read_text())
    m = dict(cfg["model"]["init_args"])
    opt = m.pop("optimizer", {}).get("init_args", {})
    for key in ("mode", "pretrained"):
        m.pop(key, None)
    m["lr"], m["weight_decay"] = opt.get("lr", 1e-3), opt.get("weight_decay", 0.01)
    d = cfg["data"]["init_args"]
    return {
        "model": m, "epochs": cfg["trainer"]["max_epochs"], "batch_size": d["batch_size"],
        "val_fraction": d["val_fraction"], "test_fraction": d["test_fraction"], "synthetic": d["synthetic"],
    }  # fmt: skip


# ------------------------------------------------------------------------------------ one training run
def _peak_step_bytes(model, batch, lr: float) -> int:
    """Peak CPU bytes of one training step: params + grads + optimizer state + the step's transient peak.

    The transient part comes from ``torch.profiler``'s allocation events (the CPU analogue of
    ``torch.cuda.max_memory_allocated``).
    """
    import torch
    from torch.profiler import ProfilerActivity, profile

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    clips, y = batch[0], batch[1]

    def step():
        loss = torch.nn.functional.cross_entropy(model(clips), y)
        opt.zero_grad(set_to_none=False)
        loss.backward()
        opt.step()

    model.train()
    step()  # grads and optimizer states exist from now on
    static = sum(p.numel() * p.element_size() for p in model.parameters())
    static += sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
    static += sum(
        v.numel() * v.element_size() for s in opt.state.values() for v in s.values() if torch.is_tensor(v)
    )
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    # each op's *self* allocations minus frees, in start order (nested ops would double count otherwise)
    events = sorted((e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start)
    running = peak = 0
    for e in events:
        running += e.self_cpu_memory_usage
        peak = max(peak, running)
    return int(static + peak)


_DATA: dict = {}  # per worker process: cache folder -> VideoEmotionDataModule


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # two workers share the two cores


def _train_one(job: dict) -> dict:
    """Train and evaluate one setting/seed (runs in a worker process); returns its metrics."""
    import lightning.pytorch as L
    import torch
    from torch.utils.data import DataLoader

    from lightning_papers.fe_adapter import (
        FEAdapterClassifier,
        FEAdapterConfig,
        VideoEmotionDataModule,
        collate_clips,
    )

    s, seed = job["settings"], job["seed"]
    m = s["model"]
    L.seed_everything(seed, verbose=False)
    if job["cache"] not in _DATA:  # one datamodule per worker: the same seeded splits, clips decoded once
        _DATA[job["cache"]] = VideoEmotionDataModule(
            "synthetic", root=job["cache"], num_frames=m["num_frames"], img_size=m["img_size"],
            batch_size=s["batch_size"], val_fraction=s["val_fraction"], test_fraction=s["test_fraction"],
            synthetic=s["synthetic"],
        )  # fmt: skip
    dm = _DATA[job["cache"]]
    model = FEAdapterClassifier(
        m["backbone"], pretrained=False, backbone_kwargs=m["backbone_kwargs"], img_size=m["img_size"],
        num_frames=m["num_frames"], num_classes=m["num_classes"], mode=job["mode"],
        adapter=FEAdapterConfig(**job["adapter"]), head_dropout=m.get("head_dropout", 0.0),
        warmup_fraction=m.get("warmup_fraction", 0.1),
        optimizer=lambda params: torch.optim.AdamW(params, lr=m["lr"], weight_decay=m["weight_decay"]),
        backbone_seed=seed,
    )  # fmt: skip

    class ClipTimer(L.Callback):  # wall time inside training batches (forward, backward, step) and clips seen
        seconds, clips, start = 0.0, 0, 0.0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.seconds += time.perf_counter() - self.start
            self.clips += len(batch[1])

    timer = ClipTimer()
    trainer = L.Trainer(
        max_epochs=job["epochs"], accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer], num_sanity_val_steps=0,
        check_val_every_n_epoch=job["epochs"],
    )  # fmt: skip
    trainer.fit(model, dm)
    val = {"val/uar": float(trainer.callback_metrics["val/uar"])}  # the last epoch's validation
    test = trainer.test(model, dm, verbose=False)[0]
    if job["fresh"] not in _DATA:
        from lightning_papers.fe_adapter import VideoClipDataset, parse_folder

        samples, classes = parse_folder(job["fresh"])
        if classes != dm.class_names:  # label indices must mean the same classes in both sets
            raise RuntimeError(f"fresh clips have classes {classes}, the training data {dm.class_names}")
        _DATA[job["fresh"]] = VideoClipDataset(
            samples, m["num_frames"], False, dm.test_dataset.transform, cache_decoded=True
        )
    fresh_loader = DataLoader(_DATA[job["fresh"]], batch_size=s["batch_size"], collate_fn=collate_clips)
    fresh = trainer.test(model, dataloaders=fresh_loader, verbose=False)[0]
    mem = (
        _peak_step_bytes(copy.deepcopy(model), next(iter(dm.train_dataloader())), m["lr"])
        if job["mem"]
        else 0
    )
    print(
        f"[fe_adapter bench] {job['key']} seed {seed}: val UAR {val['val/uar']:.3f} test UAR {test['test/uar']:.3f}"
        f" fresh test UAR {fresh['test/uar']:.3f}",
        flush=True,
    )
    return dict(
        key=job["key"], seed=seed, val_uar=val["val/uar"], uar=test["test/uar"], war=test["test/war"],
        fresh=fresh["test/uar"],
        trainable=model.trainable_parameters(), clips_per_s=timer.clips / max(timer.seconds, 1e-9), mem=mem,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------- the runs
def _variants(fe: dict) -> dict[str, tuple[str, str, str, dict]]:
    """key -> (table label, what it tests, mode, adapter config dict)."""
    v = lambda **kw: {**fe, **kw}  # noqa: E731
    st = v(bottleneck=0.5, dilations=[1], dynamic=False, bias=True)
    w, where = fe["bottleneck"], fe["position"]
    other = "after" if where == "before" else "before"
    return {
        "fe": (f"FE-Adapter (shipped: width {w}, d={{1,2,3}}, dynamic, {where} attention)", "the method", "adapter", fe),
        "st": ("ST-Adapter-style (width D/2, d=1, static, biases)", "baseline", "adapter", st),
        "frame": ("frame adapter (same adapters, no temporal mixing)", "baseline", "frame_adapter", fe),
        "probe": ("linear probe", "baseline", "linear_probe", fe),
        "full": ("full fine-tuning (per-frame image model)", "baseline", "full_finetune", fe),
        "d1": (f"d={{1}} only, static (width {w})", "what dilation adds", "adapter", v(dilations=[1], dynamic=False)),
        "static": ("d={1,2,3}, static (fixed 1/3 mix)", "what dynamic routing adds", "adapter", v(dynamic=False)),
        "pos": (f"{other} attention" + (" (AIM placement)" if other == "after" else " (the paper's placement)"),
                "position", "adapter", v(position=other)),
        "d13": ("d={1,3}, dynamic", "dilation set", "adapter", v(dilations=[1, 3])),
        "w1": ("width 1", "bottleneck width", "adapter", v(bottleneck=1)),
        "w4": ("width 4", "bottleneck width", "adapter", v(bottleneck=4)),
        "tap2": ("initial tap std 2 (the earlier default)", "initialisation", "adapter", v(tap_std=2.0)),
        "zero_up": ("init zero_up + zero padding (no difference init)", "initialisation", "adapter",
                    v(init="zero_up", padding="zeros")),
    }  # fmt: skip


def _synthetic_runs(quick: bool, out_dir: Path) -> tuple[dict[str, dict], dict]:
    from lightning_papers.fe_adapter import SyntheticEmotionVideos

    s = settings()
    epochs = QUICK_EPOCHS if quick else s["epochs"]
    fe = s["model"]["adapter"]
    variants = _variants(fe)
    if quick:
        plan = {"fe": (0,), "frame": (0,), "probe": (0,)}
    else:  # per-frame baselines are at chance by construction: one seed
        main = ("fe", "st", "d1", "static", "pos")
        plan = {
            k: MAIN_SEEDS if k in main else (0,) if k in ("frame", "probe", "full") else SEEDS
            for k in variants
        }
    cache = out_dir / ".cache" / "fe_adapter_synthetic"
    SyntheticEmotionVideos(cache, **s["synthetic"]).prepare()  # once, before the workers start
    fresh = out_dir / ".cache" / "fe_adapter_synthetic_fresh"
    SyntheticEmotionVideos(fresh, **{**s["synthetic"], **FRESH_TEST}).prepare()
    jobs = [
        dict(key=k, seed=seed, mode=variants[k][2], adapter=variants[k][3], settings=s, epochs=epochs,
             cache=str(cache), fresh=str(fresh),
             mem=not quick and seed == 0 and variants[k][1] in ("the method", "baseline"))
        for k, seeds in plan.items() for seed in seeds
    ]  # fmt: skip
    jobs.sort(key=lambda j: j["mode"] != "full_finetune")  # the slowest first, for a balanced pool
    with ProcessPoolExecutor(2, mp_context=get_context("spawn"), initializer=_init_worker) as pool:
        done = list(pool.map(_train_one, jobs))
    results: dict[str, dict] = {}
    for k in plan:
        runs = sorted((r for r in done if r["key"] == k), key=lambda r: r["seed"])
        label, role, mode, adapter = variants[k]
        results[k] = dict(
            label=label, role=role, mode=mode, adapter=adapter, trainable=runs[0]["trainable"],
            seeds=[r["seed"] for r in runs],
            val=[r["val_uar"] for r in runs], uar=[r["uar"] for r in runs], war=[r["war"] for r in runs],
            fresh=[r["fresh"] for r in runs],
            clips_per_s=float(np.mean([r["clips_per_s"] for r in runs])), mem=max(r["mem"] for r in runs),
        )  # fmt: skip
    return results, dict(epochs=epochs, **s["synthetic"], val_fraction=s["val_fraction"],
                         test_fraction=s["test_fraction"])  # fmt: skip


# ----------------------------------------------------------------------------------------- report
def _mean(values: list[float]) -> float:
    return float(np.mean(values))


def run(quick: bool, out_dir: Path) -> BenchReport:
    """Run the FE-Adapter benchmark (module docstring); ``quick``: FE-Adapter vs per-frame baselines, 1 seed."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the ViT-B/16 counts and timing run here, after the two workers are done
    try:
        return _run(quick, out_dir)
    finally:
        torch.set_num_threads(threads)


def _run(quick: bool, out_dir: Path) -> BenchReport:
    s = settings()
    res, data = _synthetic_runs(quick, out_dir)
    fe = res["fe"]
    vit_rows, info = vitb_parameter_counts(fe["adapter"], time_steps=not quick)
    head = s["model"]["backbone_kwargs"]["embed_dim"] * s["model"]["num_classes"] + s["model"]["num_classes"]
    n_fresh = FRESH_TEST["num_clips"]
    columns = [
        "setting", "val UAR", "test UAR", "test WAR", f"fresh test UAR ({n_fresh} clips)", "trainable params",
        "adapter params",
        "ST-style adapters / these", "train clips/s (in run)", "peak step MB",
    ]  # fmt: skip
    st_adapters = res["st"]["trainable"] - head if "st" in res else None

    def row(r: dict) -> list:
        adapters = r["trainable"] - head if r["mode"] in ("adapter", "frame_adapter") else 0
        ratio = st_adapters / adapters if st_adapters and adapters else None
        return [
            f"{r['label']} [{len(r['seeds'])} seed{'s' if len(r['seeds']) > 1 else ''}]", mean_std(r["val"]),
            mean_std(r["uar"]), mean_std(r["war"]), mean_std(r["fresh"]), r["trainable"], adapters, ratio,
            r["clips_per_s"],
            r["mem"] / 2**20 if r["mem"] else None,
        ]  # fmt: skip

    rows = [row(res[k]) for k in ("fe", "st", "frame", "probe", "full") if k in res]
    # the larger fresh test set decides (sampling std of a chance-level UAR: ~0.024 there, ~0.057 on the split's)
    per_frame = max(_mean(res[k]["fresh"]) for k in ("frame", "probe", "full") if k in res)
    margin = _mean(fe["fresh"]) - per_frame
    clear = margin >= 0.15
    vit_table = markdown_table(
        ["ViT-B/16 (CLIP, 224 px, 7 classes, 12 blocks)", "trainable params (incl. head)", "/ full FT",
         "ST-style / this"],
        vit_rows,
    )  # fmt: skip
    design = (
        f"width {fe['adapter']['bottleneck']}, dilations {{1,2,3}}, dynamic, {fe['adapter']['position']} attention, "
        f"difference init with tap std {fe['adapter']['tap_std']:g}"
    )
    if quick:
        notes = f"""
**Quick run**: the full run's setting at seed 0 ({data["num_clips"]} synthetic clips, {data["epochs"]} epochs,
the shipped design: {design}), FE-Adapter against the per-frame baselines only. On {n_fresh} fresh test clips
(another generator seed; the split's {int(round(data["num_clips"] * data["test_fraction"]))} test clips are in the
table too, with ~2.4x their sampling noise) FE-Adapter reaches UAR {_mean(fe["fresh"]):.3f} vs frame adapter
{_mean(res["frame"]["fresh"]):.3f} and linear probe {_mean(res["probe"]["fresh"]):.3f} (chance {CHANCE:.2f}; per-frame
models are at chance by construction): margin {margin:+.3f} ({"clear: >= 0.15" if clear else "NOT clear: < 0.15"},
i.e. more than 6 sampling standard deviations of a chance-level UAR on {n_fresh} clips). The full run (`lightning-papers bench fe_adapter`) adds
6 seeds, the ST-Adapter-style comparison, ablations and the speed measurements.

{vit_table}
"""
        return BenchReport(
            name="fe_adapter",
            title="FE-Adapter quick check: temporal adapters vs per-frame baselines (synthetic clips)",
            columns=columns, rows=rows, notes=notes,
            headline=f"fresh test UAR {_mean(fe['fresh']):.3f} vs per-frame {per_frame:.3f} (chance 0.25)",
            goal_met=clear,
        )  # fmt: skip

    # -- ablations: paired (same seeds) differences to the shipped design, on validation and on test
    ablation_keys = [k for k in res if res[k]["role"] not in ("the method", "baseline")]
    candidates = ["fe", *ablation_keys]
    ratio = {k: st_adapters / (res[k]["trainable"] - head) for k in candidates}
    delta = {k: (paired_difference(res[k], fe, "val"), paired_difference(res[k], fe, "fresh")) for k in ablation_keys}
    # selection by validation only: a variant with >= 15x fewer adapter parameters than the ST-style adapter
    # replaces the shipped design when its validation UAR is measurably better (paired t-test over seeds, 5%)
    better = [k for k in ablation_keys if ratio[k] >= 15 and paired_verdict(*delta[k][0]) == "better"]
    chosen = max(better, key=lambda k: delta[k][0][0]) if better else "fe"
    best_mean = max((k for k in candidates if ratio[k] >= 15), key=lambda k: _mean(res[k]["val"]))
    abl_columns = ["variant", "tests", "seeds", "val UAR", "Δ val vs shipped (paired ± se)", "val verdict",
                   "test UAR", "fresh test UAR", "Δ fresh test vs shipped", "adapter params", "ST-style / this",
                   "selected by val"]  # fmt: skip
    abl_rows = [[fe["label"], "the method", len(fe["seeds"]), mean_std(fe["val"]), "–", "–", mean_std(fe["uar"]),
                 mean_std(fe["fresh"]), "–", fe["trainable"] - head, ratio["fe"], chosen == "fe"]]  # fmt: skip
    for k in ablation_keys:
        (dv, sv, nv), (dt, st_, _) = delta[k]
        abl_rows.append([
            res[k]["label"], res[k]["role"], len(res[k]["seeds"]), mean_std(res[k]["val"]), f"{dv:+.3f} ± {sv:.3f}",
            paired_verdict(dv, sv, nv), mean_std(res[k]["uar"]), mean_std(res[k]["fresh"]), f"{dt:+.3f} ± {st_:.3f}",
            res[k]["trainable"] - head,
            ratio[k], k == chosen,
        ])  # fmt: skip

    def adds(without: dict, with_: dict, what: str) -> str:
        (dv, sv, n), (dt, se_t, _) = paired_difference(with_, without, "val"), paired_difference(with_, without, "fresh")
        v = paired_verdict(dv, sv, n)
        head_ = {"better": f"{what} adds {dv:+.3f} val UAR", "worse": f"{what} costs {dv:+.3f} val UAR",
                 "no measurable difference": f"{what} adds nothing measurable"}[v]  # fmt: skip
        return (f"{head_} (paired over {n} seeds: Δ val {dv:+.3f} ± {sv:.3f}, Δ fresh test {dt:+.3f} ± {se_t:.3f}; "
                f"{mean_std(without['val'])} → {mean_std(with_['val'])} val UAR)")  # fmt: skip

    st = res["st"]
    ratio_tiny = ratio["fe"]
    ratio_vitb = info["st_adapters"] / info["fe_adapters"]
    win = _mean(fe["fresh"]) >= _mean(st["fresh"])
    d_st, se_st, n_st = paired_difference(fe, st, "fresh")
    tiny = tiny_step_times(s)
    tiny_speed, tiny_text = ratio_mean_std(tiny["full_finetune"], tiny["adapter"])
    vt = info["vitb_times"]
    vitb_speed, vitb_text = ratio_mean_std(vt["full"], vt["fe"])
    fe_cps = s["batch_size"] / np.median(tiny["adapter"])
    full_cps = s["batch_size"] / np.median(tiny["full_finetune"])
    goal = win and ratio_tiny >= 15 and ratio_vitb >= 15 and vitb_speed >= 1.3 and chosen == "fe"
    verdict = lambda ok: "met" if ok else "NOT met"  # noqa: E731
    placement = f"{fe['adapter']['position']} attention instead of {res['pos']['adapter']['position']}"
    notes = f"""
**Synthetic task** (`SyntheticEmotionVideos`, settings `lightning_papers.bench.fe_adapter.SETTINGS` =
`cli_configs/fe_adapter/synthetic.yaml`): {data["num_clips"]} mp4 clips, {data["size"]}x{data["size"]} px,
{data["clip_len"]} frames, read through decord like real data. Each clip shows a cartoon face with one smile and one
frown at random onsets, hold times (brief or sustained), onset speeds and amplitudes (subtle or broad); the 4
classes are the order of the two expressions x their distance (close: ~1.5 frames apart, apart: ~3.5 frames).
Every clip has the same kinds of frames and each class is the time reverse of another, so per-frame models
(frame adapter, linear probe, full fine-tuning of the image model, all averaging over time) are at chance
({CHANCE:.2f}) by construction. Tiny random ViT (pretrained=False, img 32, patch 8, D=64, 2 blocks), 8 frames,
{data["epochs"]} epochs, AdamW lr 1e-2, batch {s["batch_size"]}; split 70/15/15 (train/val/test, stratified, seeded:
{int(round(data["num_clips"] * data["val_fraction"]))} validation and {int(round(data["num_clips"] * data["test_fraction"]))}
test clips), plus {n_fresh} **fresh test clips** from another generator seed (never used for training or
selection; ~2.4x less sampling noise than the split's test clips, so the goals use them). Seeds (backbone, adapters, batch order): {len(MAIN_SEEDS)} for the method, the ST-style baseline and
the ablations the goals are about (placement, routing, dilation), {len(SEEDS)} for the other ablations, 1 for the
per-frame baselines. The FE and ST-style rows share the initialisation (`difference`, replicate padding) so only
the adapter's shape differs. Why dilations matter here: a 2-block model with a kernel-3, dilation-1 temporal conv
per block relates frames at most 2 apart, the "apart" classes need ~3-4; on a 12-block ViT-B an ST-Adapter
reaches ±12 frames, so this task exaggerates what dilation buys on deep backbones.

**Ablations** (same data and budget; Δ = variant − shipped design over the seeds both ran, ± its standard
error; "better"/"worse" when a paired t-test over those seeds rejects "no difference" at 5%, else "no
measurable difference". Model selection
uses validation only: the shipped design stays unless a variant with >= 15x fewer adapter parameters than the
ST-style adapter is measurably better on validation; test UARs are only reported):

{markdown_table(abl_columns, abl_rows)}

Selected by validation: **{res[chosen]["label"]}** ({"the shipped default" if chosen == "fe" else "NOT the shipped default"};
highest mean validation UAR: {res[best_mean]["label"]}, {mean_std(res[best_mean]["val"])}{"" if best_mean == chosen else ", not measurably better than the shipped design"}).
- Placement: {adds(res["pos"], fe, placement)}.
- Dilation (both static): {adds(res["d1"], res["static"], "dilations {1,2,3} instead of {1}")}.
- Dynamic routing: {adds(res["static"], fe, "dynamic routing instead of a fixed 1/3 mix")}.
- Dilation + routing together: {adds(res["d1"], fe, "the dynamic dilated conv instead of a static d=1 conv")}.
The initial tap std (2 → 4) was chosen before this run on validation UAR of 4 seeds (0.545 → 0.630 mean; 8 gave
0.634, the same within noise); its row above re-measures it.

**Paper-setting parameter counts** (computed by building the modules, nothing typed in):

{vit_table}

**Training speed**, interleaved repeated measurements (every round times each setting in turn on the same
batch; ratio = full fine-tuning's step time / FE-Adapter's, mean ± std over rounds): ViT-B/16, one 8-frame
224-px clip, {len(vt["fe"])} rounds, 2 threads: FE-Adapter {np.median(vt["fe"]):.2f} s vs full fine-tuning
{np.median(vt["full"]):.2f} s per step, **{vitb_text}x**; tiny model, batch {s["batch_size"]}, {len(tiny["adapter"])} rounds of
15 steps, 1 thread: {fe_cps:.0f} vs {full_cps:.0f} clips/s, **{tiny_text}x**. The "train clips/s (in run)" column
counts training steps inside the benchmark's runs, two workers side by side, and is noisier.

**Goals**:
- FE-Adapter >= ST-Adapter-style fresh test UAR (mean over seeds {_mean(fe["fresh"]):.3f} vs {_mean(st["fresh"]):.3f}, paired
  Δ {d_st:+.3f} ± {se_st:.3f} over {n_st} seeds): {verdict(win)}; at >= 15x fewer adapter parameters (tiny model
  {ratio_tiny:.1f}x, ViT-B/16 {ratio_vitb:.1f}x): {verdict(ratio_tiny >= 15 and ratio_vitb >= 15)}.
- Ablation rows showing what dynamic and dilated each add: shown above (dilation: {paired_verdict(*paired_difference(res["static"], res["d1"], "val"))};
  dynamic routing: {paired_verdict(*paired_difference(fe, res["static"], "val"))}, on validation).
- The shipped design is the one validation selects: {verdict(chosen == "fe")}.
- Train clips/s >= 1.3x full fine-tuning's: ViT-B/16 {vitb_speed:.2f}x ({verdict(vitb_speed >= 1.3)}); tiny model
  {tiny_speed:.2f}x ({verdict(tiny_speed >= 1.3)}{"" if tiny_speed >= 1.3 else ": with D=64 and 2 blocks the saved weight gradients and optimizer state are a small part of a step, which still back-propagates through every frozen block to the first adapter"}).
- Quick mode meaningful: the quick run is this setting at seed 0; here seed 0 gives FE fresh test UAR
  {fe["fresh"][fe["seeds"].index(0)]:.3f} vs per-frame {per_frame:.3f} (the quick run's own
  result: `benchmarks/results/quick/fe_adapter.md`).
Peak step memory = parameters + gradients + AdamW state + the step's transient peak (`torch.profiler`, CPU).

Paper (arXiv 2408.02421) reports ~15x fewer parameters than earlier video adapters with equal or better
UAR/WAR on DFEW, FERV39k and MAFW; its numbers are not reproduced here (no dataset or pretrained weights are
downloaded). Reference UAR/WAR of other methods: MAE-DFER DFEW 63.41/74.43; S2D DFEW 61.82/76.03, FERV39k
41.28/52.56, MAFW 41.86/57.37.
"""
    headline = (
        f"fresh test UAR {_mean(fe['fresh']):.3f} vs ST-style {_mean(st['fresh']):.3f} at {ratio_tiny:.0f}x fewer "
        f"adapter params "
        f"(ViT-B/16 {ratio_vitb:.1f}x); per-frame {per_frame:.3f}; ViT-B/16 step {vitb_speed:.2f}x faster than full FT"
    )
    return BenchReport(
        name="fe_adapter",
        title="FE-Adapter: temporal adapters on a frozen image ViT (synthetic multi-scale emotion clips + ViT-B/16 counts)",
        columns=columns, rows=rows, notes=notes, headline=headline, goal_met=goal,
    )  # fmt: skip
