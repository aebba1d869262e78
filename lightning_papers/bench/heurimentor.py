"""HeuriMentor benchmark: tiny Aquila2 with FSDP2 on 2 CPU processes (gloo), same seed in every run.

(a) clean run without callbacks vs with TSM + ATE + DMU: step-time overhead (goal < 3 %);
(b) one source ("code") corrupted by uniform noise tokens for the middle 30 % of the run: without HM
    (monitor only, no actions) vs with HM (skip, rollback + exclusion, down-weighting);
(c) fixed stage mixture vs the EXP3 online policy: held-out loss at equal tokens.

The two worker processes are started here with torch.distributed environment variables (so Lightning
does not relaunch anything) and run every scenario in one process group, one Trainer after another.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lightning_papers.bench.report import BenchReport

SEQ_LEN, BATCH, WORLD = 64, 8, 2


def _stages(steps: int) -> list[dict]:
    per_step = SEQ_LEN * BATCH * WORLD
    return [
        {"name": "language", "weights": {"prose": 0.5, "code": 0.35, "qa": 0.15}, "tokens": per_step * int(steps * 0.35)},
        {"name": "knowledge", "weights": {"prose": 0.35, "code": 0.4, "qa": 0.25}, "tokens": per_step * int(steps * 0.35)},
        {"name": "target", "weights": {"prose": 0.3, "code": 0.3, "qa": 0.4}, "tokens": None},
    ]


SCENARIOS = [  # (name, callbacks, corrupt, policy)
    ("clean_none", "none", False, "fixed"),
    ("clean_hm", "all", False, "fixed"),
    ("corrupt_monitor_only", "tsm", True, "fixed"),
    ("corrupt_hm", "all", True, "fixed"),
    ("clean_hm_exp3", "all", False, "exp3"),
]


# ====================================================================== worker (runs in each process)
def _worker(cfg_path: str) -> None:
    import torch

    torch.set_num_threads(1)
    import lightning.pytorch as L
    from lightning.pytorch.strategies import ModelParallelStrategy

    from lightning_papers.heurimentor import (
        AdaptiveTrainingEngine,
        Aquila2LM,
        DataManagementUnit,
        MixtureDataModule,
        TrainingStateMonitor,
    )

    cfg = json.loads(Path(cfg_path).read_text())
    steps, out = cfg["steps"], Path(cfg["out"])
    rank = int(os.environ["RANK"])

    class Clock(L.Callback):
        def __init__(self):
            self.times, self.losses = [], []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.times.append(time.perf_counter())
            self.losses.append(float(outputs["loss"]))

    results = {}
    for name, cbs, corrupt, policy in SCENARIOS:
        L.seed_everything(cfg["seed"], verbose=False)
        c0, c1 = int(steps * 0.4) * BATCH * WORLD, int(steps * 0.7) * BATCH * WORLD
        dm = MixtureDataModule(seq_len=SEQ_LEN, batch_size=BATCH, max_chars=300_000, stages=_stages(steps), seed=cfg["seed"],
                               corrupt_source="code" if corrupt else None, corrupt_start=c0, corrupt_stop=c1)
        model = Aquila2LM("tiny", warmup_steps=max(5, steps // 20), model_config={"max_position_embeddings": SEQ_LEN})
        clock = Clock()
        callbacks: list = [clock]
        tsm = ate = dmu = None
        if cbs in ("tsm", "all"):
            tsm = TrainingStateMonitor(
                detectors=[{"kind": "rolling", "window": 20, "ratio": 1.3}, {"kind": "zscore", "window": 128, "threshold": 6.0}],
                plateau_window=0, log_dir=str(out / name), dashboard=(name == "corrupt_hm"),
                heldout_every=max(10, steps // 8) if name == "corrupt_hm" else 0, log_metrics=False,
                trajectory_every=max(10, steps // 8) if name == "corrupt_hm" else 0,
            )
            callbacks.append(tsm)
        if cbs == "all":
            ate = AdaptiveTrainingEngine(rollback_after=3, snapshot_every=10, max_rollbacks=3)
            dmu = DataManagementUnit(policy=policy, policy_floor=0.05, policy_lr=0.05, downweight_on_spike=0.25)
            callbacks += [ate, dmu]
        trainer = L.Trainer(
            accelerator="cpu", devices=WORLD, strategy=ModelParallelStrategy(data_parallel_size=WORLD, tensor_parallel_size=1),
            max_steps=steps, callbacks=callbacks, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, default_root_dir=str(out / name), limit_val_batches=0, num_sanity_val_steps=0,
        )
        t0 = time.perf_counter()
        trainer.fit(model, dm)
        fit_s = time.perf_counter() - t0
        model.eval()
        held = {}
        with torch.no_grad():
            for src, batch in dm.heldout_batches().items():
                held[src] = float(model.per_sample_loss(batch).mean())
        times = clock.times
        deltas = [b - a for a, b in zip(times, times[1:])][max(5, steps // 10):]
        r = {
            "fit_s": fit_s,
            "step_ms": 1000 * sorted(deltas)[len(deltas) // 2] if deltas else float("nan"),
            "heldout": held,
            "heldout_mean": sum(held.values()) / len(held),
            "final_train_loss": sum(clock.losses[-10:]) / max(1, len(clock.losses[-10:])),
            "max_train_loss": max(clock.losses),
            "tokens": steps * SEQ_LEN * BATCH * WORLD,
        }
        if tsm is not None:
            r["spike_steps"] = [s for s, sp in zip(tsm.history["step"], tsm.history["spike"]) if sp]
        if ate is not None:
            r["skipped"] = len(ate.skipped_steps)
            r["rollbacks"] = [dict(x, excluded=list(x["excluded"])) for x in ate.rollback_log]
            r["final_weights"] = dmu.sampler.weights
            r["penalties"] = dmu.penalties
            r["blocked"] = len(dmu.sampler.blocked_ids)
        results[name] = r
        if rank == 0:
            print(f"[heurimentor bench] {name}: {json.dumps({k: v for k, v in r.items() if k != 'heldout'})}", flush=True)
    if rank == 0:
        Path(cfg["result"]).write_text(json.dumps(results))


# ====================================================================== driver
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(cfg: dict, timeout: int) -> dict:
    work = Path(cfg["out"])
    work.mkdir(parents=True, exist_ok=True)
    cfg_path = work / "config.json"
    cfg_path.write_text(json.dumps(cfg))
    port = _free_port()
    procs = []
    for rank in range(WORLD):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(WORLD),
               "RANK": str(rank), "LOCAL_RANK": str(rank), "NODE_RANK": "0", "OMP_NUM_THREADS": "1",
               "PYTHONWARNINGS": "ignore"}
        log = open(work / f"rank{rank}.log", "w")
        procs.append((subprocess.Popen([sys.executable, "-m", "lightning_papers.bench.heurimentor", "worker", str(cfg_path)],
                                       env=env, stdout=log, stderr=subprocess.STDOUT), log))
    deadline = time.time() + timeout
    try:
        for p, _ in procs:
            p.wait(timeout=max(1, deadline - time.time()))
    except subprocess.TimeoutExpired:
        for p, _ in procs:
            p.kill()
        raise RuntimeError(f"benchmark workers timed out after {timeout} s; logs in {work}") from None
    finally:
        for _, log in procs:
            log.close()
    if any(p.returncode for p, _ in procs):
        tail = (work / "rank0.log").read_text()[-3000:]
        raise RuntimeError(f"benchmark worker failed:\n{tail}")
    return json.loads(Path(cfg["result"]).read_text())


def run(quick: bool, out_dir: Path) -> BenchReport:
    steps = 60 if quick else 300
    tmp = Path(tempfile.mkdtemp(prefix="hm_bench_"))
    cfg = {"steps": steps, "seed": 0, "out": str(tmp), "result": str(tmp / "result.json")}
    res = _launch(cfg, timeout=280 if quick else 900)
    fig = "heurimentor_dashboard.png"
    dash = tmp / "corrupt_hm" / "heurimentor_dashboard.png"
    figures = []
    if dash.is_file():
        shutil.copy(dash, Path(out_dir) / fig)
        figures.append(fig)
    log = tmp / "corrupt_hm" / "heurimentor.log"
    if log.is_file():
        shutil.copy(log, Path(out_dir) / "heurimentor_corrupt_run.log")

    def row(label, r, base_ms):
        spikes = len(r.get("spike_steps", [])) if "spike_steps" in r else None
        rb = len(r.get("rollbacks", [])) if "rollbacks" in r else None
        w = r.get("final_weights")
        return [label, r["step_ms"], r["step_ms"] / base_ms, r["heldout_mean"], r["heldout"]["code"], r["max_train_loss"],
                spikes, r.get("skipped"), rb, None if w is None else round(w.get("code", 0.0), 3)]

    base = res["clean_none"]["step_ms"]
    rows = [
        row("(a) clean, no callbacks", res["clean_none"], base),
        row("(a) clean, TSM+ATE+DMU (fixed mixture)", res["clean_hm"], base),
        row("(b) corrupted 'code', monitor only (no HM actions)", res["corrupt_monitor_only"], base),
        row("(b) corrupted 'code', TSM+ATE+DMU", res["corrupt_hm"], base),
        row("(c) clean, TSM+ATE+DMU, EXP3 online mixture", res["clean_hm_exp3"], base),
    ]
    overhead = res["clean_hm"]["step_ms"] / base - 1
    b_without, b_with = res["corrupt_monitor_only"]["heldout_mean"], res["corrupt_hm"]["heldout_mean"]
    c_fixed, c_exp3 = res["clean_hm"]["heldout_mean"], res["clean_hm_exp3"]["heldout_mean"]
    goal = overhead < 0.03
    hm = res["corrupt_hm"]
    notes = f"""
Settings: tiny Aquila2 (2 layers, d=64, 4 heads / 2 KV heads, byte vocab 256), FSDP2 `fully_shard` per decoder
layer under `ModelParallelStrategy(data_parallel_size=2)` on 2 CPU processes (gloo), {steps} steps of
{BATCH}x{SEQ_LEN} tokens per rank ({res['clean_none']['tokens']:,} tokens per run), seed 0 in every run, three
embedded sources (prose = CPython docs, code = stdlib sources, qa = templates) with a three-stage schedule
(35 % / 35 % / rest of the tokens). Held-out loss = mean over the three sources of 16 held-out windows each
(clean data) after the last step. Step time = median wall time per step on rank 0 after warm-up.
In (b) every window of `code` drawn between 40 % and 70 % of the run is uniform noise tokens.
HM settings: detectors rolling-mean ratio 1.3 over 20 steps + z-score 6 over 128; rollback after 3 spikes in a
row, snapshot every 10 steps, at most 3 rollbacks; the source blamed for a spike is down-weighted x0.25 (floor
0.05), penalties recover with a half-life of 100 steps. (A first run with FlagScale's relative-to-last-good 0.2
rule flagged 31 false spikes on the clean run: with 16 windows from three sources per step the batch loss
varies by more than 20 % from step to step.)

**(a) Overhead** of TSM+ATE+DMU: {100 * overhead:+.1f} % per step (goal < 3 %: {'met' if goal else 'NOT met'}).
One extra all-reduce per step (loss, grad-norm, flags), per-source losses every 10 steps.

**(b) Corrupted source**: held-out loss {b_without:.3f} without HM actions vs {b_with:.3f} with HM
({'better' if b_with < b_without else 'not better'}); spikes flagged {len(res['corrupt_monitor_only'].get('spike_steps', []))}
(monitor only) vs {len(hm.get('spike_steps', []))}; with HM: {hm.get('skipped')} steps skipped,
{len(hm.get('rollbacks', []))} rollbacks, {hm.get('blocked')} windows blocked, final weight of `code`
{hm.get('final_weights', {}).get('code', float('nan')):.3f} (penalty x{hm.get('penalties', {}).get('code', 1.0):.3g}).

**(c) Online mixture**: held-out loss fixed stages {c_fixed:.3f} vs EXP3 {c_exp3:.3f}
({'EXP3 better' if c_exp3 < c_fixed else 'EXP3 not better'}) at equal tokens.

The paper (Aquila2 report) gives no numbers for HeuriMentor itself; it reports that spikes at 70B were
traced to low-quality data and handled by cleaning data rather than rolling back.
"""
    headline = (f"overhead {100 * overhead:+.1f} % (goal <3 %); corrupted-source held-out loss {b_with:.3f} with HM vs "
                f"{b_without:.3f} without; EXP3 {c_exp3:.3f} vs fixed {c_fixed:.3f}")
    shutil.rmtree(tmp, ignore_errors=True)
    return BenchReport(
        name="heurimentor",
        title="HeuriMentor (TSM + ATE + DMU) on tiny Aquila2, FSDP2 on 2 CPU processes",
        columns=["run", "step ms", "step time ratio", "held-out loss (mean)", "held-out loss (code)", "max train loss",
                 "spikes flagged", "steps skipped", "rollbacks", "final w(code)"],
        rows=rows,
        notes=notes,
        headline=headline,
        goal_met=goal,
        figures=figures,
    )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "worker":
        _worker(sys.argv[2])
    else:
        print("usage: python -m lightning_papers.bench.heurimentor worker CONFIG.json", file=sys.stderr)
        sys.exit(2)
