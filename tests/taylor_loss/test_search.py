"""CMA-ES loss search: determinism, bit-exact resume, pool == in-process, presets, CLI, training helper."""

import json

import pytest
import torch
from torch import nn

from lightning_papers.taylor_loss import (
    LossSearch,
    SearchTask,
    TaylorLoss,
    load_task_data,
    search_taylor_loss,
    train_and_evaluate,
)

TINY = [SearchTask("digits", "symmetric", 0.4, hidden=(16,), seed=3)]
KW = dict(degree=2, popsize=3, epochs=15, sigma0=0.5, seed=7)


def _run(out, generations, workers=0, resume=True, callback=None):
    return LossSearch(TINY, out_dir=out, workers=workers, **KW).run(
        generations, resume=resume, progress=False, callback=callback
    )


def test_search_is_deterministic_for_a_seed(tmp_path):
    a = _run(tmp_path / "a", 2)
    b = _run(tmp_path / "b", 2)
    assert a.coefficients == b.coefficients and a.fitness == b.fitness
    assert [h["gen_mean_fitness"] for h in a.history] == [h["gen_mean_fitness"] for h in b.history]
    other = LossSearch(TINY, out_dir=tmp_path / "c", workers=0, **{**KW, "seed": 8}).run(2, progress=False)
    assert [h["best_coefficients"] for h in other.history] != [h["best_coefficients"] for h in a.history]
    assert a.evaluations == 6 and len(a.history) == 2
    lines = (tmp_path / "a" / "search_log.jsonl").read_text().splitlines()
    assert [json.loads(x)["generation"] for x in lines] == [1, 2]


def test_resume_after_interrupt_reaches_the_same_result(tmp_path):
    full = _run(tmp_path / "full", 3)

    def interrupt(generation, record):
        if generation == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "part", 3, callback=interrupt)
    state_gen = len((tmp_path / "part" / "search_log.jsonl").read_text().splitlines())
    assert state_gen == 2
    resumed = _run(tmp_path / "part", 3)  # fresh object, picks up the checkpoint
    assert resumed.history == [{**h, "seconds": r["seconds"]} for h, r in zip(full.history, resumed.history)]
    assert resumed.coefficients == full.coefficients and resumed.generations == 3
    # a finished search asked for the same number of generations does nothing more
    again = _run(tmp_path / "part", 3)
    assert again.evaluations == resumed.evaluations


def test_resume_refuses_a_different_configuration(tmp_path):
    _run(tmp_path / "x", 1)
    with pytest.raises(ValueError, match="different search configuration"):
        LossSearch(TINY, out_dir=tmp_path / "x", workers=0, **{**KW, "popsize": 4}).run(2, progress=False)


@pytest.mark.slow
def test_process_pool_gives_the_in_process_result(tmp_path):
    a = _run(tmp_path / "inproc", 1, workers=0)
    b = _run(tmp_path / "pool", 1, workers=1)
    assert a.history[0]["gen_mean_fitness"] == b.history[0]["gen_mean_fitness"]
    assert a.coefficients == b.coefficients


def test_written_preset_loads_into_taylor_loss(tmp_path):
    res = search_taylor_loss(TINY, generations=1, out_dir=tmp_path / "s", workers=0, progress=False, **KW)
    crit = TaylorLoss(preset=res.preset_path)
    assert crit.coefficients.tolist() == pytest.approx(res.coefficients, abs=1e-6)
    assert abs(sum(abs(c) for c in res.coefficients) - 1.0) < 1e-9  # L1-normalised


def test_bad_search_arguments():
    with pytest.raises(ValueError, match="at least one SearchTask"):
        LossSearch([])
    with pytest.raises(ValueError, match="popsize"):
        LossSearch(TINY, popsize=1)
    with pytest.raises(ValueError, match="dataset must be one of"):
        SearchTask("cifar")
    with pytest.raises(ValueError, match="x0 must have"):
        LossSearch(TINY, degree=3, x0=[1.0])


def test_robust_loss_beats_cross_entropy_under_noise():
    data = load_task_data(SearchTask("digits", "symmetric", 0.4, seed=5))
    kw = dict(hidden=(64,), epochs=120, lr=1e-2, seed=5)
    ce = train_and_evaluate(nn.CrossEntropyLoss(), data, **kw)
    tl = train_and_evaluate(TaylorLoss(preset="ce2"), data, **kw)
    assert ce["memorized"] > 0.5 > tl["memorized"]
    assert tl["test_acc"] > ce["test_acc"] + 0.1


def test_search_loss_cli(tmp_path):
    from lightning_papers.cli import main

    preset = tmp_path / "p.yaml"
    main(
        [
            "search-loss",
            "--out_dir",
            str(tmp_path / "cli"),
            "--datasets",
            "[digits]",
            "--noise",
            "[symmetric:0.4]",
            "--hidden",
            "[[8]]",
            "--degree",
            "2",
            "--generations",
            "1",
            "--popsize",
            "2",
            "--epochs",
            "3",
            "--workers",
            "0",
            "--progress",
            "false",
            "--preset_out",
            str(preset),
        ]
    )
    assert TaylorLoss(preset=str(preset)).degree == 2
    with pytest.raises(SystemExit):
        main(
            ["search-loss", "--noise", "[gaussian:0.1]", "--out_dir", str(tmp_path / "bad"), "--workers", "0"]
        )
    torch.manual_seed(0)


def test_search_config_file_parses_to_the_shipped_recipe():
    from pathlib import Path

    import yaml
    from jsonargparse import ActionConfigFile, ArgumentParser

    from lightning_papers.taylor_loss.commands import search_loss
    from lightning_papers.taylor_loss.loss import load_preset

    root = Path(__file__).resolve().parents[2]
    parser = ArgumentParser()
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_function_arguments(search_loss, as_positional=True, fail_untyped=False)
    cfg = parser.parse_args(["--config", str(root / "cli_configs/taylor_loss/search_digits.yaml")])
    recipe = load_preset("robust")["recipe"]
    assert cfg.degree == recipe["degree"] and cfg.popsize == recipe["popsize"] and cfg.seed == recipe["seed"]
    assert cfg.epochs == recipe["epochs"] and cfg.lr == recipe["lr"] and cfg.sigma0 == recipe["sigma0"]
    assert len(cfg.datasets) * len(cfg.noise) * len(cfg.task_seeds) == len(recipe["tasks"])
    assert {t["n_samples"] for t in recipe["tasks"]} == {cfg.mnist1d_samples}
    assert (
        yaml.safe_load((root / "cli_configs/taylor_loss/search_digits.yaml").read_text())["preset_name"]
        == "robust"
    )
