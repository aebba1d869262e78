"""HeuriMentor benchmark: tiny Aquila2 with FSDP2 on 2 CPU processes (gloo), same seed in every run.

(a) overhead: >= 5 interleaved pairs (no callbacks, TSM + ATE + DMU); median and spread of the per-pair
    step-time ratio (goal < 3 %); the monitor's state size at half and at the end of a run (constant);
(b) one source ("code") corrupted by uniform noise tokens for the middle 30 % of the run: without HM
    (monitor only, no actions) vs with HM (skip, rollback + exclusion, down-weighting);
(c) fixed stage mixture vs the EXP3 online policy: held-out loss at equal tokens (full run only);
(d) streaming token shards: a 2-process FSDP2 run killed mid-epoch and resumed from its sharded
    checkpoint reproduces the uninterrupted run's samples and losses;
(e) mixture memory over corpus sizes 10^7 .. 10^9 tokens (sparse shard files; fresh process each).

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

__all__ = ["run"]

SEQ_LEN, BATCH, WORLD = 64, 8, 2


def _stages(steps: int) -> list[dict]:
    per_step = SEQ_LEN * BATCH * WORLD
    return [
        {"name": "language", "weights": {"prose": 0.5, "code": 0.35, "qa": 0.15}, "tokens": per_step * int(steps * 0.35)},
        {"name": "knowledge", "weights": {"prose": 0.35, "code": 0.4, "qa": 0.25}, "tokens": per_step * int(steps * 0.35)},
        {"name": "target", "weights": {"prose": 0.3, "code": 0.3, "qa": 0.4}, "tokens": None},
    ]


SCENARIOS = [  # (name, callbacks, corrupt, policy)
    ("corrupt_monitor_only", "tsm", True, "fixed"),
    ("corrupt_hm", "all", True, "fixed"),
    ("clean_hm_exp3", "all", False, "exp3"),
    ("clean_hm", "all", False, "fixed"),
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
    import io

    def nbytes(state):
        buf = io.BytesIO()
        torch.save(state, buf)
        return buf.tell()

    class Sizes(L.Callback):  # HeuriMentor's checkpointed state at half and at the end of the run
        def __init__(self, cbs):
            self.cbs, self.sizes = cbs, {}

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step in (steps // 2, steps):
                self.sizes[trainer.global_step] = sum(nbytes(c.state_dict()) for c in self.cbs)

    class Stop(L.Callback):
        def __init__(self, at):
            self.at = at

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step >= self.at:
                trainer.should_stop = True

    def trainer_for(n_steps, callbacks, name, ckpt_dir_ok=False):
        return L.Trainer(
            accelerator="cpu", devices=WORLD, strategy=ModelParallelStrategy(data_parallel_size=WORLD, tensor_parallel_size=1,
                                                                             save_distributed_checkpoint=True),
            max_steps=n_steps, callbacks=callbacks, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, default_root_dir=str(out / name), limit_val_batches=0, num_sanity_val_steps=0,
            use_distributed_sampler=False,
        )

    class Clock(L.Callback):
        def __init__(self):
            self.times, self.cpu, self.losses = [], [], []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.times.append(time.perf_counter())
            self.cpu.append(time.process_time())  # this process's CPU time: less sensitive to other processes
            self.losses.append(float(outputs["loss"]))

    results = {}
    for name, cbs, corrupt, policy in SCENARIOS:
        if name == "clean_hm_exp3" and cfg["quick"]:
            continue
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
                plateau_window=0, log_dir=str(out / name), dashboard=(name == "corrupt_hm"), history_size=32, max_records=8,
                heldout_every=max(10, steps // 8) if name == "corrupt_hm" else 0, log_metrics=False,
                trajectory_every=max(10, steps // 8) if name == "corrupt_hm" else 0,
            )
            callbacks.append(tsm)
        if cbs == "all":
            ate = AdaptiveTrainingEngine(rollback_after=3, snapshot_every=10, max_rollbacks=3)
            dmu = DataManagementUnit(policy=policy, policy_floor=0.05, policy_lr=0.05, downweight_on_spike=0.25)
            callbacks += [ate, dmu]
        sizes = Sizes([c for c in (tsm, ate, dmu) if c is not None])
        callbacks.append(sizes)
        trainer = trainer_for(steps, callbacks, name)
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
            r["spike_steps"] = [row[0] for row in tsm.history.spike_rows()]
            r["state_bytes"] = sizes.sizes
        if ate is not None:
            r["skipped"] = len(ate.skipped_steps)
            r["rollbacks"] = [dict(x, excluded=list(x["excluded"])) for x in ate.rollback_log]
            r["final_weights"] = dmu.sampler.weights
            r["penalties"] = dmu.penalties
            r["blocked"] = len(dmu.sampler.blocked_ids)
        results[name] = r
        if rank == 0:
            print(f"[heurimentor bench] {name}: {json.dumps({k: v for k, v in r.items() if k != 'heldout'})}", flush=True)

    # (a) overhead: interleaved pairs, same data and seed, the order alternating inside each pair
    def timed(with_hm, n_steps, seed):
        L.seed_everything(seed, verbose=False)
        dm = MixtureDataModule(seq_len=SEQ_LEN, batch_size=BATCH, max_chars=100_000, stages=_stages(n_steps), seed=seed)
        model = Aquila2LM("tiny", warmup_steps=5, model_config={"max_position_embeddings": SEQ_LEN})
        clock = Clock()
        cbs: list = [clock]
        if with_hm:
            cbs += [TrainingStateMonitor(detectors=[{"kind": "rolling", "window": 20, "ratio": 1.3},
                                                    {"kind": "zscore", "window": 128, "threshold": 6.0}],
                                         plateau_window=0, dashboard=False, log_metrics=False, history_size=32),
                    AdaptiveTrainingEngine(rollback_after=3, snapshot_every=10), DataManagementUnit()]
        trainer_for(n_steps, cbs, f"overhead_{int(with_hm)}").fit(model, dm)
        deltas = sorted(b - a for a, b in zip(clock.times, clock.times[1:]))  # per-step wall times
        cpu = (clock.cpu[-1] - clock.cpu[0]) / max(1, len(clock.cpu) - 1)
        return 1000 * deltas[len(deltas) // 2], 1000 * cpu  # median wall: robust to the odd slow step

    pairs = []
    for rep in range(cfg["repeats"]):
        order = (False, True) if rep % 2 == 0 else (True, False)
        ms = {w: timed(w, cfg["overhead_steps"], rep) for w in order}
        pairs.append([ms[False][0], ms[True][0], ms[False][1], ms[True][1]])
    results["overhead_pairs"] = pairs

    # (d) streaming shards: uninterrupted vs killed at half and resumed from the sharded checkpoint
    shards = cfg["shards"]
    kr_steps = cfg["resume_steps"]
    sstages = [{"name": "a", "weights": {"prose": 0.5, "code": 0.3, "qa": 0.2}, "tokens": SEQ_LEN * BATCH * WORLD * (kr_steps // 2 + 1)},
               {"name": "b", "weights": {"prose": 0.2, "code": 0.3, "qa": 0.5}}]

    class Record(L.Callback):
        def __init__(self):
            self.ids, self.loss = {}, {}

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.ids[trainer.global_step - 1] = batch["sample_ids"].tolist()
            self.loss[trainer.global_step - 1] = float(outputs["loss"])

    def stream_run(name, extra=(), ckpt=None, seed=0):
        L.seed_everything(seed, verbose=False)
        rec = Record()
        cbs = [TrainingStateMonitor(plateau_window=0, dashboard=False, log_metrics=False), AdaptiveTrainingEngine(),
               DataManagementUnit(policy="exp3", policy_every=2), rec, *extra]
        trainer = trainer_for(kr_steps, cbs, name)
        dm = MixtureDataModule(token_shards=shards, seq_len=SEQ_LEN, batch_size=BATCH, stages=sstages, num_workers=2)
        trainer.fit(Aquila2LM("tiny", warmup_steps=3, model_config={"max_position_embeddings": SEQ_LEN}), dm, ckpt_path=ckpt)
        return trainer, rec

    _, full = stream_run("stream_full")
    t1, first = stream_run("stream_killed", extra=[Stop(kr_steps // 2)])
    ckpt = str(out / "stream_ckpt")
    t1.save_checkpoint(ckpt)
    _, second = stream_run("stream_resumed", ckpt=ckpt, seed=123)
    ids, losses = {**first.ids, **second.ids}, {**first.loss, **second.loss}
    results[f"resume_rank{rank}"] = {
        "steps": kr_steps, "killed_at": kr_steps // 2, "resumed_first": min(second.ids) if second.ids else None,
        "same_ids": [ids.get(s) for s in range(kr_steps)] == [full.ids.get(s) for s in range(kr_steps)],
        "max_loss_diff": max(abs(losses[s] - full.loss[s]) for s in range(kr_steps)) if len(losses) == kr_steps else None,
        "same_losses": all(losses.get(s) == full.loss.get(s) for s in range(kr_steps)),
    }
    Path(cfg["result"] + f".rank{rank}").write_text(json.dumps(results))


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
        tail = (work / "rank0.log").read_text()[-3000:] + (work / "rank1.log").read_text()[-2000:]
        raise RuntimeError(f"benchmark worker failed:\n{tail}")
    res = json.loads(Path(cfg["result"] + ".rank0").read_text())
    res["resume_rank1"] = json.loads(Path(cfg["result"] + ".rank1").read_text())["resume_rank1"]
    return res


_MEMORY_PROBE = """
import json, os, sys
import torch
torch.set_num_threads(1)
from lightning_papers.heurimentor import MixtureDataModule
def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
shards = json.loads(sys.argv[1])
import lightning_papers.heurimentor.datamodule  # noqa: imports done before the baseline
base, base_file = rss("RssAnon:"), rss("RssFile:")
dm = MixtureDataModule(token_shards=shards, seq_len=64, batch_size=8, heldout_windows=4,
                       stages=[{"weights": {k: 1 / len(shards) for k in shards}}])
dm.setup("fit")
n = 0
for batch, _ in zip(dm.train_dataloader(), range(int(sys.argv[2]))):
    n += int(batch["input_ids"].numel())
held = dm.heldout_batches()
print(json.dumps({"peak_delta": rss("RssAnon:") - base, "file_delta": rss("RssFile:") - base_file, "tokens_read": n,
                  "windows": sum(dm.sampler.source_sizes.values())}))
"""


def _sparse_shards(root: Path, total_tokens: int) -> dict[str, str]:
    """Three sources of total_tokens uint16 tokens as sparse files (no disk blocks, same format as prepare-data)."""
    from lightning_papers.heurimentor.shards import FORMAT

    out = {}
    per = total_tokens // 3
    for name in ("web", "code", "qa"):
        d = root / f"{total_tokens}" / name
        d.mkdir(parents=True, exist_ok=True)
        files, left, i = [], per, 0
        while left:
            n = min(left, 1 << 28)
            with open(d / f"tokens-{i:05d}.bin", "wb") as f:
                f.truncate(2 * n)
            files.append({"name": f"tokens-{i:05d}.bin", "tokens": n, "bytes": 2 * n})
            left -= n
            i += 1
        index = {"format": FORMAT, "version": 1, "dtype": "uint16", "tokenizer": "bytes", "tokenizer_fingerprint": "bytes",
                 "vocab_size": 256, "num_tokens": per, "documents": 1, "files": files, "inputs": []}
        (d / "index.json").write_text(json.dumps(index))
        out[name] = str(d)
    return out


def _memory(root: Path, sizes: list[int], batches: int) -> dict[int, dict]:
    res = {}
    for total in sizes:
        shards = _sparse_shards(root, total)
        proc = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, json.dumps(shards), str(batches)], capture_output=True,
                              text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"})
        if proc.returncode:
            raise RuntimeError(f"memory probe failed: {proc.stderr[-2000:]}")
        res[total] = json.loads(proc.stdout.strip().splitlines()[-1])
        shutil.rmtree(root / f"{total}", ignore_errors=True)
    return res


def run(quick: bool, out_dir: Path) -> BenchReport:
    import statistics

    steps = 60 if quick else 300
    tmp = Path(tempfile.mkdtemp(prefix="hm_bench_"))
    from lightning_papers.heurimentor import prepare_data
    from lightning_papers.heurimentor.data import builtin_source_text

    shards = {}
    for name in ("prose", "code", "qa"):
        src = tmp / f"{name}.txt"
        src.write_text(builtin_source_text(name, 120_000))
        prepare_data([str(src)], str(tmp / "shards" / name), progress=False)
        shards[name] = str(tmp / "shards" / name)
    cfg = {"steps": steps, "seed": 0, "out": str(tmp), "result": str(tmp / "result.json"), "quick": quick,
           "repeats": 5 if quick else 7, "overhead_steps": 25 if quick else 80, "resume_steps": 8 if quick else 20,
           "shards": shards}
    res = _launch(cfg, timeout=280 if quick else 900)
    mem_sizes = [10**7, 10**9] if quick else [10**7, 10**8, 10**9]
    memory = _memory(tmp / "sparse", mem_sizes, 100 if quick else 300)
    fig = "heurimentor_dashboard.png"
    dash = tmp / "corrupt_hm" / "heurimentor_dashboard.png"
    figures = []
    if dash.is_file():
        shutil.copy(dash, Path(out_dir) / fig)
        figures.append(fig)
    log = tmp / "corrupt_hm" / "heurimentor.log"
    if log.is_file():
        shutil.copy(log, Path(out_dir) / "heurimentor_corrupt_run.log")

    ratios = [p[1] / p[0] - 1 for p in res["overhead_pairs"]]
    med = statistics.median(ratios)
    q = sorted(ratios)
    cpu_ratios = sorted(p[3] / p[2] - 1 for p in res["overhead_pairs"])
    cpu_med = statistics.median(cpu_ratios)
    none_ms = statistics.median(p[0] for p in res["overhead_pairs"])
    hm_ms = statistics.median(p[1] for p in res["overhead_pairs"])

    def row(label, r):
        w = r.get("final_weights")
        return [label, r["step_ms"], r["heldout_mean"], r["heldout"]["code"], r["max_train_loss"],
                len(r.get("spike_steps", [])), r.get("skipped"), len(r["rollbacks"]) if "rollbacks" in r else None,
                None if w is None else round(w.get("code", 0.0), 3)]

    rows = [
        ["(a) clean, no callbacks (median of pairs)", none_ms, None, None, None, None, None, None, None],
        ["(a) clean, TSM+ATE+DMU (median of pairs)", hm_ms, None, None, None, None, None, None, None],
        row("(a) clean, TSM+ATE+DMU, full-length run", res["clean_hm"]),
        row("(b) corrupted 'code', monitor only (no HM actions)", res["corrupt_monitor_only"]),
        row("(b) corrupted 'code', TSM+ATE+DMU", res["corrupt_hm"]),
    ]
    if "clean_hm_exp3" in res:
        rows.append(row("(c) clean, TSM+ATE+DMU, EXP3 online mixture", res["clean_hm_exp3"]))
    goal_overhead = med < 0.03
    sizes = res["clean_hm"].get("state_bytes", {})
    half, end = sizes.get(str(steps // 2)), sizes.get(str(steps))
    goal_state = half is not None and end is not None and abs(end - half) <= 256
    mem = {k: v["peak_delta"] / 2**20 for k, v in memory.items()}
    growth = mem[max(mem)] - mem[min(mem)]
    goal_mem = growth <= 50
    r0, r1 = res["resume_rank0"], res["resume_rank1"]
    goal_resume = all(r["same_ids"] and r["same_losses"] for r in (r0, r1))
    b_without, b_with = res["corrupt_monitor_only"]["heldout_mean"], res["corrupt_hm"]["heldout_mean"]
    hm = res["corrupt_hm"]
    mem_rows = ", ".join(f"{k:.0e} tokens: {v:+.1f} MB" for k, v in sorted(mem.items()))
    file_rows = ", ".join(f"{k:.0e} tokens: {v['file_delta'] / 2**20:+.1f} MB" for k, v in sorted(memory.items()))
    exp3 = ""
    if "clean_hm_exp3" in res:
        c_fixed, c_exp3 = res["clean_hm"]["heldout_mean"], res["clean_hm_exp3"]["heldout_mean"]
        exp3 = (f"\n**(c) Online mixture**: held-out loss fixed stages {c_fixed:.3f} vs EXP3 {c_exp3:.3f} "
                f"({'EXP3 better' if c_exp3 < c_fixed else 'EXP3 not better'}) at equal tokens.\n")
    overhead_why = "" if goal_overhead else (
        " Why the overhead goal is missed: the cost is fixed host work per step (detector checks in Python, packing "
        "the step's values into one tensor, copying per-sample losses to the host, the ring-buffer append, event "
        "dispatch), a few milliseconds against the tens of milliseconds of this 2-layer CPU model's step; it does not "
        "grow with the model, so at Aquila2-7B step times (seconds) it would be far below 1 %, but that is an argument, "
        "not a measurement here. Tried: batching every reduction into one collective per step and computing the "
        "gradient norm only every `source_loss_every` steps."
    )
    notes = f"""
Settings: tiny Aquila2 (2 layers, d=64, 4 heads / 2 KV heads, byte vocab 256), FSDP2 `fully_shard` per decoder
layer under `ModelParallelStrategy(data_parallel_size=2)` on 2 CPU processes (gloo), batches of {BATCH}x{SEQ_LEN}
tokens per rank, seed 0, three embedded sources (prose = CPython docs, code = stdlib sources, qa = templates).
Rows (b)/(c) run {steps} steps with a three-stage schedule; held-out loss = mean over the sources of 16 held-out
windows after the last step. In (b) every window of `code` drawn between 40 % and 70 % of the run is noise.
HM settings: rolling-mean ratio 1.3 over 20 steps + z-score 6 over 128; rollback after 3 spikes in a row, snapshot
every 10 steps (host memory), at most 3 rollbacks; the blamed source is down-weighted x0.25 (floor 0.05).

| goal | measured | verdict |
|---|---|---|
| overhead of TSM+ATE+DMU < 3 % (median of {len(ratios)} interleaved pairs of {cfg['overhead_steps']}-step runs, wall time per step) | median {100 * med:+.1f} %, range {100 * q[0]:+.1f} .. {100 * q[-1]:+.1f} % (rank-0 CPU time per step: median {100 * cpu_med:+.1f} %, range {100 * cpu_ratios[0]:+.1f} .. {100 * cpu_ratios[-1]:+.1f} %) | {'met' if goal_overhead else 'not met'} |
| mixture memory flat (<= +50 MB from 1e7 to 1e9 tokens) | {mem_rows} (growth {growth:+.1f} MB) | {'met' if goal_mem else 'not met'} |
| monitor checkpoint size constant in steps | HM callbacks' state {half} B at step {steps // 2}, {end} B at step {steps} | {'met' if goal_state else 'not met'} |
| 2-process FSDP2 kill-and-resume on streaming shards reproduces samples and losses | killed at step {r0['killed_at']} of {r0['steps']}, resumed from the sharded checkpoint: same sample ids {r0['same_ids'] and r1['same_ids']}, bit-equal losses {r0['same_losses'] and r1['same_losses']} (both ranks; max difference {max(r0['max_loss_diff'] or 0, r1['max_loss_diff'] or 0):.2g}) | {'met' if goal_resume else 'not met'} |

Overhead: each pair runs the same seed and data without and with the callbacks, alternating which goes first;
the per-pair ratio of median step times removes most of the drift of a shared 2-core machine; the range shows
what is left. One collective per step carries all of HeuriMentor's reductions.{overhead_why}
Memory: growth of the anonymous resident memory (heap: what the process allocates) of a fresh process that builds
the mixture over sparse uint16 shard files of the given total size and reads {100 if quick else 300} batches (memory
maps, Feistel permutations: nothing per window). File pages mapped by the reads are page cache, shared and
reclaimable, bounded by the batches read (kernel fault-around maps up to 64 KB per random read): {file_rows}.

**(b) Corrupted source**: held-out loss {b_without:.3f} without HM actions vs {b_with:.3f} with HM
({'better' if b_with < b_without else 'not better'}); spikes flagged {len(res['corrupt_monitor_only'].get('spike_steps', []))}
(monitor only) vs {len(hm.get('spike_steps', []))}; with HM: {hm.get('skipped')} steps skipped,
{len(hm.get('rollbacks', []))} rollbacks, {hm.get('blocked')} windows blocked, final weight of `code`
{hm.get('final_weights', {}).get('code', float('nan')):.3f} (penalty x{hm.get('penalties', {}).get('code', 1.0):.3g}).
{exp3}
The paper (Aquila2 report) gives no numbers for HeuriMentor itself; it reports that spikes at 70B were
traced to low-quality data and handled by cleaning data rather than rolling back.
"""
    goal = goal_overhead and goal_mem and goal_state and goal_resume
    headline = (f"overhead median {100 * med:+.1f} % (range {100 * q[0]:+.1f}..{100 * q[-1]:+.1f}, goal <3 %); mixture memory "
                f"{growth:+.1f} MB from 1e7 to 1e9 tokens; resume exact: {goal_resume}; corrupted-source held-out loss "
                f"{b_with:.3f} with HM vs {b_without:.3f} without")
    shutil.rmtree(tmp, ignore_errors=True)
    return BenchReport(
        name="heurimentor",
        title="HeuriMentor (TSM + ATE + DMU) on tiny Aquila2, FSDP2 on 2 CPU processes",
        columns=["run", "step ms", "held-out loss (mean)", "held-out loss (code)", "max train loss",
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
