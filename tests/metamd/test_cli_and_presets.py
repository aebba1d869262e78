from pathlib import Path

import torch
from torch import nn

from lightning_papers import cli
from lightning_papers.metamd import DEFAULT_PRESET, MetaMirrorDescent, MirrorMap, available_presets

CONFIG = Path("cli_configs/metamd/digits_mlp.yaml")


def test_shipped_preset_is_the_default_and_meta_learned():
    assert DEFAULT_PRESET in available_presets()
    m = MirrorMap.from_preset(DEFAULT_PRESET)
    assert m.meta.get("objective") == "regret_bound" and m.meta.get("meta_steps", 0) > 0
    assert not all(m.is_linear(s) for s in range(m.num_slots))  # it learned a non-linear map
    net = nn.Linear(4, 2)
    opt = MetaMirrorDescent(net.parameters())
    assert opt.mirror_map.assignment == m.assignment
    x = torch.linspace(-1, 1, 11)
    assert torch.equal(opt.mirror_map.h(x, 0), m.h(x, 0))


def test_meta_train_subcommand_runs_the_shipped_config_shrunk(tmp_path, capsys):
    out = tmp_path / "map.pt"
    cli.main(
        [
            "meta-train",
            "--config",
            str(CONFIG),
            "--meta_steps",
            "2",
            "--task_pool",
            "1",
            "--unroll_steps",
            "2",
            "--max_warm_start",
            "1",
            "--reference_steps",
            "5",
            "--output",
            str(out),
            "--checkpoint_dir",
            str(tmp_path / "ck"),
            "--progress",
            "false",
        ]
    )
    text = capsys.readouterr().out
    assert "wrote" in text and out.is_file()
    m = MirrorMap.load(out)
    assert m.assignment == "role" and m.meta["meta_steps"] == 2 and m.meta["families"] == ["mlp_digits"]
    assert (tmp_path / "ck" / "metamd_meta_train.pt").is_file()
