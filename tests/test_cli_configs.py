"""Every config under cli_configs/ parses; every `fit` config on embedded data runs one fast_dev_run step.

Configs with a ``# requires: ...`` header line (user data, paper-scale models, several processes) are only
parsed (``--print_config``); other subcommands' configs are exercised by their method's tests.
"""

from pathlib import Path

import pytest

from lightning_papers import cli

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.relative_to(ROOT) for p in (ROOT / "cli_configs").rglob("*.yaml"))


def _header(path: Path) -> list[str]:
    return (ROOT / path).read_text().splitlines()[:3]


def _command(path: Path) -> str:
    first = _header(path)[0]
    assert first.startswith("# lightning-papers "), f"{path}: first line must be the command that runs it"
    return first.split()[2]


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p) for p in CONFIGS])
def test_config_header_names_a_known_subcommand(path):
    command = _command(path)
    assert command in cli.TRAINER_SUBCOMMANDS or command in cli.SUBCOMMANDS
    assert f"--config {path.as_posix()}" in _header(path)[0]


FIT = [p for p in CONFIGS if _command(p) == "fit"]


@pytest.mark.slow
@pytest.mark.parametrize("path", FIT, ids=[str(p) for p in FIT])
def test_fit_config_runs(path, tmp_path, capsys):
    if any(line.startswith("# requires:") for line in _header(path)):
        with pytest.raises(SystemExit) as exc:  # --print_config prints the parsed config and exits 0
            cli.main(["fit", "--config", str(ROOT / path), "--print_config"])
        assert exc.value.code in (0, None)
        assert "model:" in capsys.readouterr().out
        return
    result = cli.main([
        "fit", "--config", str(ROOT / path), "--trainer.fast_dev_run=1", f"--trainer.default_root_dir={tmp_path}",
        "--trainer.logger=false",
    ])
    assert result.trainer.state.finished and result.trainer.global_step >= 1  # one real optimizer step
    assert list(Path(tmp_path).iterdir()) == []  # no logger: nothing written, not even config.yaml
