"""Helper script for test_aquila2_scale.py (not a test): rank RANK of WORLD gloo processes builds a mid-size
Aquila2 (about 58M parameters) sharded with FSDP2, with and without meta-device init, and reports its peak
resident memory growth while building it. usage: python meta_job.py OUT meta|eager (RANK, WORLD_SIZE, MASTER_* in
env). One build per process: memory freed by an earlier build would be reused and hide the later one's growth.
"""

import json
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)
import torch.distributed as dist  # noqa: E402
from torch.distributed.device_mesh import init_device_mesh  # noqa: E402

from lightning_papers.heurimentor import Aquila2LM  # noqa: E402

CONFIG = {"hidden_size": 512, "intermediate_size": 1376, "num_hidden_layers": 8, "num_attention_heads": 8,
          "num_key_value_heads": 8, "vocab_size": 32000, "max_position_embeddings": 64}


def rss(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def build(meta: bool, mesh) -> dict:
    torch.manual_seed(0)
    base = rss("VmRSS:")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak-RSS counter
    lm = Aquila2LM("tiny", model_config=CONFIG, meta_init=meta)
    lm._device_mesh = mesh  # what ModelParallelStrategy sets before configure_model
    lm.configure_model()
    peak = rss("VmHWM:") - base
    local = sum(p.to_local().numel() * p.element_size() for p in lm.parameters())
    full = sum(p.numel() * p.element_size() for p in lm.parameters())
    ids = torch.randint(0, 32000, (2, 32), generator=torch.Generator().manual_seed(1))
    loss = float(lm.per_sample_loss({"input_ids": ids, "labels": ids}).mean())
    std = float(lm.model.model.layers[0].mlp.up_proj.weight.full_tensor().std())
    del lm
    return {"peak": peak, "local": local, "full": full, "loss": loss, "std": std}


def main(out: Path, mode: str) -> None:
    dist.init_process_group("gloo")
    mesh = init_device_mesh("cpu", (dist.get_world_size(),), mesh_dim_names=("data_parallel",))
    result = build(mode == "meta", mesh)
    (out / f"{mode}_rank{dist.get_rank()}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
