"""Rollback points that stay off the accelerator: host memory (pinned, asynchronous copies) or a sharded
``torch.distributed.checkpoint`` on disk. Each rank keeps only its own shards; at most ``keep`` snapshots.

A rollback point holds parameters, buffers and optimizer state (params + Adam moments are about 3x the
model's memory: on the GPU that would be an out-of-memory at 7B). Restoring copies the saved values back
*in place* into the live tensors (DTensor shards stay sharded), so the restored state is bit-identical.
"""

from __future__ import annotations

import copy
import shutil
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch

__all__ = ["SnapshotStore"]


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def _inner(opt: Any) -> torch.optim.Optimizer:
    return getattr(opt, "inner", opt)


class SnapshotStore:
    """Keep the last ``keep`` good states of a module and its optimizers off the device.

    Args:
        kind: ``"host"`` (CPU memory, pinned and copied on a side stream when the tensors are on CUDA) or
            ``"disk"`` (``torch.distributed.checkpoint``, one shard file per rank, under ``directory``; the
            directory must be visible to every rank).
        keep: snapshots kept (the oldest is dropped; host buffers are reused).
        directory: where disk snapshots go.

    Example::

        >>> m = torch.nn.Linear(2, 2); opt = torch.optim.SGD(m.parameters(), lr=1.0)
        >>> store = SnapshotStore("host")
        >>> store.save(0, m, [opt]); w = m.weight.detach().clone()
        >>> with torch.no_grad():
        ...     _ = m.weight.add_(1.0)
        >>> store.restore(m, [opt]), torch.equal(m.weight, w)
        (0, True)
    """

    def __init__(self, kind: Literal["host", "disk"] = "host", keep: int = 1, directory: str | Path | None = None) -> None:
        if kind not in ("host", "disk"):
            raise ValueError(f"snapshot kind must be 'host' or 'disk', got {kind!r}")
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        if kind == "disk" and directory is None:
            raise ValueError("a disk snapshot store needs a directory")
        self.kind, self.keep = kind, int(keep)
        self.directory = Path(directory) if directory is not None else None
        self._snaps: deque[dict[str, Any]] = deque()
        self._event = None

    def __len__(self) -> int:
        return len(self._snaps)

    @property
    def steps(self) -> list[int]:
        return [s["step"] for s in self._snaps]

    def nbytes(self) -> int:
        """Host bytes held by the kept snapshots (0 for disk snapshots)."""
        total = 0
        for s in self._snaps:
            for t in s.get("tensors", []):
                total += t.numel() * t.element_size()
        return total

    # ------------------------------------------------------------------ save
    def save(self, step: int, module: torch.nn.Module, optimizers: Sequence[Any], rank: int = 0) -> None:
        """Snapshot ``module`` and ``optimizers`` as the good state before step ``step``."""
        self.wait()
        if self.kind == "disk":
            self._save_disk(step, module, optimizers, rank)
            return
        reuse = self._snaps.popleft() if len(self._snaps) >= self.keep else None
        sources = [_local(p.detach()) for p in module.parameters()] + [b.detach() for b in module.buffers()]
        opt_meta = []
        for opt in optimizers:
            sd = _inner(opt).state_dict()
            entries = {}
            for idx, st in sd["state"].items():
                entries[idx] = {}
                for k, v in st.items():
                    if isinstance(v, torch.Tensor):
                        entries[idx][k] = ("t", len(sources), hasattr(v, "to_local"))
                        sources.append(_local(v.detach()))
                    else:
                        entries[idx][k] = ("v", copy.deepcopy(v))
            groups = [{k: copy.deepcopy(v) for k, v in g.items() if k != "params"} for g in sd["param_groups"]]
            opt_meta.append({"state": entries, "groups": groups})
        old = reuse["tensors"] if reuse is not None else []
        host = []
        cuda = any(t.is_cuda for t in sources)
        for i, src in enumerate(sources):
            buf = old[i] if i < len(old) and old[i].shape == src.shape and old[i].dtype == src.dtype else None
            if buf is None:
                buf = torch.empty(src.shape, dtype=src.dtype, device="cpu", pin_memory=src.is_cuda)
            host.append(buf)
        if cuda:  # copy on a side stream, overlapping the next forward/backward; wait() before the next update
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for buf, src in zip(host, sources):
                    buf.copy_(src, non_blocking=True)
            self._event = stream.record_event()
        else:
            for buf, src in zip(host, sources):
                buf.copy_(src)
        n_params = sum(1 for _ in module.parameters())
        self._snaps.append({"step": int(step), "tensors": host, "n_params": n_params, "optimizers": opt_meta})

    def wait(self) -> None:
        """Block until the asynchronous copies of the last snapshot are done (call before the next update)."""
        if self._event is not None:
            self._event.synchronize()
            self._event = None

    def _save_disk(self, step: int, module: torch.nn.Module, optimizers: Sequence[Any], rank: int) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        opts = [_inner(o) for o in optimizers]
        model_sd, optim_sd = get_state_dict(module, opts)
        path = self.directory / f"step-{int(step):09d}"
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(path))
        groups = [[{k: copy.deepcopy(v) for k, v in g.items() if k != "params"} for g in o.param_groups] for o in opts]
        self._snaps.append({"step": int(step), "path": path, "groups": groups})
        while len(self._snaps) > self.keep:
            old = self._snaps.popleft()
            if rank == 0:  # dcp.save ended with a collective: no rank still writes the old one
                shutil.rmtree(old["path"], ignore_errors=True)

    # ------------------------------------------------------------------ restore
    @torch.no_grad()
    def restore(self, module: torch.nn.Module, optimizers: Sequence[Any]) -> int:
        """Copy the newest snapshot back into ``module`` and ``optimizers`` in place; return its step."""
        if not self._snaps:
            raise RuntimeError("no snapshot to roll back to")
        self.wait()
        snap = self._snaps[-1]
        if self.kind == "disk":
            self._restore_disk(snap, module, optimizers)
            return snap["step"]
        host = snap["tensors"]
        live = [_local(p.detach()) for p in module.parameters()] + [b.detach() for b in module.buffers()]
        for dst, src in zip(live, host):
            dst.copy_(src, non_blocking=False)
        for opt, meta in zip(optimizers, snap["optimizers"]):
            inner = _inner(opt)
            flat = [p for g in inner.param_groups for p in g["params"]]
            saved = meta["state"]
            for idx, p in enumerate(flat):
                if idx not in saved:
                    inner.state.pop(p, None)  # no state at snapshot time (e.g. before the first step)
                    continue
                st = inner.state.setdefault(p, {})
                for k, entry in saved[idx].items():
                    if entry[0] == "v":
                        st[k] = copy.deepcopy(entry[1])
                        continue
                    value = host[entry[1]]
                    cur = st.get(k)
                    if isinstance(cur, torch.Tensor):
                        _local(cur).copy_(value)
                    elif entry[2]:  # a sharded state tensor that does not exist any more: rebuild the DTensor
                        from torch.distributed.tensor import DTensor

                        st[k] = DTensor.from_local(value.to(_local(p).device), p.device_mesh, p.placements)
                    else:
                        st[k] = value.clone().to(p.device if value.dim() else value.device)
            for g, saved_g in zip(inner.param_groups, meta["groups"]):
                g.update(copy.deepcopy(saved_g))
        return snap["step"]

    def _restore_disk(self, snap: dict[str, Any], module: torch.nn.Module, optimizers: Sequence[Any]) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        opts = [_inner(o) for o in optimizers]
        model_sd, optim_sd = get_state_dict(module, opts)
        state = {"model": model_sd, "optim": optim_sd}
        dcp.load(state, checkpoint_id=str(snap["path"]))
        set_state_dict(module, opts, model_state_dict=state["model"], optim_state_dict=state["optim"])
        for o, groups in zip(opts, snap["groups"]):
            for g, saved_g in zip(o.param_groups, groups):
                g.update(copy.deepcopy(saved_g))
