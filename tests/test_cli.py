import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightning_papers import cli

ROOT = Path(__file__).resolve().parents[1]
DIGITS_MLP = str(ROOT / "cli_configs" / "common" / "digits_mlp.yaml")


def test_help_lists_every_subcommand(capsys):
    cli.main(["--help"])
    out = capsys.readouterr().out
    for name in [*cli.TRAINER_SUBCOMMANDS, *cli.SUBCOMMANDS]:
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(name + " "))
        assert len(line.split(None, 1)[1]) > 10  # a one-line description
    for name in ("quantize", "search-loss", "meta-train", "bench"):
        assert name in out


def test_console_script_help_is_fast_and_light():
    # --help must not import torch, lightning or transformers
    code = "import sys; from lightning_papers.cli import main; main(['--help']); " \
           "print(sorted(m for m in ('torch','lightning','transformers','timm') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_unknown_subcommand_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["train"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown subcommand 'train'" in err and "fit" in err


def test_fit_fast_dev_run_on_a_config(tmp_path, capsys):
    result = cli.main([
        "fit", "--config", DIGITS_MLP,
        "--trainer.fast_dev_run=2", f"--trainer.default_root_dir={tmp_path}",
    ])
    assert result.trainer.global_step == 2  # two optimizer steps, as asked
    assert type(result.datamodule).__name__ == "DigitsDataModule"
    assert result.model.net(torch.zeros(1, 64)).shape == (1, 10)  # built from the YAML: 64 inputs, 10 classes


def test_fit_trains_from_yaml_with_short_names(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        "trainer: {max_epochs: 3, logger: false, enable_checkpointing: false, enable_progress_bar: false,"
        " enable_model_summary: false}\n"
        "model: {class_path: Classifier, init_args: {net: {class_path: lightning_papers.models.MLP,"
        " init_args: {hidden: [64]}}, optimizer: {class_path: torch.optim.Adam, init_args: {lr: 0.01}}}}\n"
        "data: {class_path: DigitsDataModule, init_args: {batch_size: 64}}\n"
    )
    result = cli.main(["fit", "--config", str(config), f"--trainer.default_root_dir={tmp_path}"])
    assert float(result.trainer.callback_metrics["val/acc"]) > 0.85  # three epochs of an MLP learn the digits


@pytest.mark.parametrize(
    "args, needle",
    [
        (["fit", "--config", "no/such/config.yaml"], "no/such/config.yaml"),
        (["fit", "--config", DIGITS_MLP, "--data.class_path", "NoSuchDataModule"],
         "NoSuchDataModule"),
        (["fit", "--config", DIGITS_MLP, "--data.init_args.noise_type", "symmetric",
          "--data.init_args.noise_rate", "1.5"], "noise_rate must be in [0, 1), got 1.5"),
        (["bench", "no_such_method"], "no_such_method"),
        (["fit", "--config", DIGITS_MLP, "--trainer.max_epochs", "abc"],
         "trainer.max_epochs\": Expected a <class 'int'> (got 'abc')"),
    ],
)
def test_bad_input_gives_one_clear_line(args, needle, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert needle in err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 3


def test_function_subcommands_parse_config_and_bare_bool_flags(monkeypatch, tmp_path):
    calls = []

    def job(name: str, steps: int = 1, verbose: bool = False) -> str:
        """A toy job."""
        calls.append((name, steps, verbose))
        return f"done {name}"

    import types

    module = types.ModuleType("toy_jobs")
    module.job = job
    monkeypatch.setitem(sys.modules, "toy_jobs", module)
    monkeypatch.setitem(cli.SUBCOMMANDS, "toy", ("toy_jobs:job", "A toy job."))
    config = tmp_path / "toy.yaml"
    config.write_text("steps: 7\n")
    cli.main(["toy", "abc", "--config", str(config), "--verbose"])
    cli.main(["toy", "xyz"])
    assert calls == [("abc", 7, True), ("xyz", 1, False)]


def test_console_script_entry_point():
    out = subprocess.run(["lightning-papers", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "search-loss" in out.stdout


def _tiny_fit_args(root, logger: bool) -> list[str]:
    return [
        "fit", "--config", DIGITS_MLP,
        "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
        f"--trainer.logger={str(logger).lower()}", f"--trainer.default_root_dir={root}",
    ]


def test_fit_without_logger_writes_no_config_and_never_overwrites(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "config.yaml"
    mine.write_text("the user's own file\n")
    result = cli.main(_tiny_fit_args(tmp_path, logger=False))
    assert result.trainer.state.finished  # main returns the LightningCLI object
    assert mine.read_text() == "the user's own file\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


def test_fit_with_logger_saves_config_in_each_run_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):  # a second run gets its own version folder instead of failing or overwriting
        cli.main(_tiny_fit_args(tmp_path / "logs", logger=True))
    saved = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("config.yaml"))
    assert saved == ["logs/lightning_logs/version_0/config.yaml", "logs/lightning_logs/version_1/config.yaml"]
    assert "digits" in (tmp_path / saved[0]).read_text().lower()
