from pathlib import Path

import torch
from torch import nn

from lightning_papers import cli
from lightning_papers.metamd import (
    DEFAULT_PRESET,
    AdaptiveMirrorMap,
    MetaMirrorDescent,
    MirrorMap,
    available_presets,
    resolve_mirror_map,
)

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "cli_configs/metamd/digits_mlp.yaml"
MY_MODEL = ROOT / "cli_configs/metamd/my_model.yaml"


def test_shipped_default_is_a_meta_learned_adaptive_map():
    assert DEFAULT_PRESET in available_presets()
    m = resolve_mirror_map(DEFAULT_PRESET)
    assert isinstance(m, AdaptiveMirrorMap)
    assert m.meta["objective"] == "unrolled_log_loss" and m.meta["meta_steps"] > 0
    assert m.meta["val_tasks"] > 0 and m.meta["selected_val_score"] <= 0.0  # selected: not slower than Adam
    net = nn.Linear(4, 2)
    opt = MetaMirrorDescent(net.parameters())
    assert opt.adaptive and opt.defaults["lr"] == 1e-3
    assert all(torch.equal(a, b) for a, b in zip(opt.mirror_map.parameters(), m.parameters()))
    # the static paper-literal map still ships
    assert isinstance(resolve_mirror_map("digits_mlp"), MirrorMap)


def test_meta_train_subcommand_takes_model_and_data_class_paths(tmp_path, capsys):
    out = tmp_path / "my_map.pt"
    cli.main(
        [
            "meta-train", "--config", str(MY_MODEL), "--meta_steps", "2", "--tasks_per_step", "1",
            "--unroll_steps", "2", "--max_warm_start", "1", "--task_pool", "1", "--reference_steps", "5",
            "--val_tasks", "1", "--val_every", "1", "--val_steps", "3", "--n_examples", "32",
            "--output", str(out),
        ]
    )  # fmt: skip
    assert "wrote" in capsys.readouterr().out
    m = AdaptiveMirrorMap.load(out)
    assert m.meta["families"] == ["Classifier"] and m.meta["meta_steps"] == 2


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
