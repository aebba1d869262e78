"""The synthetic config learns the multi-scale temporal task; a per-frame linear probe on the same data does not."""

import math
from pathlib import Path

import pytest

CONFIG = Path(__file__).resolve().parents[2] / "cli_configs" / "fe_adapter" / "synthetic.yaml"


def _fit(tmp_path, *overrides):
    from lightning.pytorch.cli import LightningCLI

    from lightning_papers.cli import _import_packages

    _import_packages()
    cli = LightningCLI(
        model_class=None, datamodule_class=None, subclass_mode_model=True, subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=[
            "fit", "--config", str(CONFIG), f"--data.init_args.root={tmp_path / 'clips'}",
            "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path}", *overrides,
        ],
    )  # fmt: skip
    return {k: float(v) for k, v in cli.trainer.callback_metrics.items()}


@pytest.mark.slow
def test_synthetic_config_learns_order_while_linear_probe_stays_at_chance(tmp_path):
    # the config as shipped (~30 s on two cores), validated once at the end as in the benchmark: a validation
    # pass draws a DataLoader seed from the global RNG, so validating every epoch changes the training run
    once = ["--trainer.num_sanity_val_steps=0", "--trainer.check_val_every_n_epoch=30"]
    adapter = _fit(tmp_path, *once)
    probe = _fit(tmp_path, "--model.init_args.mode=linear_probe", "--trainer.max_epochs=6")
    chance = 0.25  # per-frame models are at chance by construction
    # a chance-level model's score on the ~58 validation clips (15 % of 384) has a standard deviation of
    # sqrt(0.25 * 0.75 / 58) ≈ 0.057: the probe must stay within 2.5 of them of chance
    noise = math.sqrt(chance * (1 - chance) / round(0.15 * 384))
    # seed 0 is the weakest of the benchmark's three seeds (val UAR 0.41; 0.64 and 0.54 for the others)
    assert adapter["val/uar"] >= chance + 0.125, adapter
    assert probe["val/uar"] <= chance + 2.5 * noise, probe
    assert adapter["val/uar"] > probe["val/uar"], (adapter, probe)
