"""Loss search on user tasks: determinism, exact resume, any executor, task forms, bad input, presets, CLI."""

import json
from concurrent.futures import ThreadPoolExecutor

import lightning.pytorch as L
import pytest
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader

from lightning_papers.data import DigitsDataModule
from lightning_papers.models import MLP
from lightning_papers.taylor_loss import (
    LossSearch,
    LossTask,
    TaylorLoss,
    heldout_tasks,
    load_task_data,
    search_tasks,
    search_taylor_loss,
    train_and_evaluate,
)
from lightning_papers.taylor_loss.search import vector_to_coefficients


class DictBatches(L.LightningDataModule):
    """A user's datamodule: dict batches, its own class, 3 classes (so asymmetric noise needs another map)."""

    def __init__(self, n: int = 240, labels: bool = True):
        super().__init__()
        self.n, self.labels = n, labels

    def _ds(self, seed):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(self.n, 6, generator=g)
        y = (x[:, 0] > 0.4).long() + (x[:, 1] > 0).long()
        return [{"x": a, "label": b} if self.labels else {"x": a} for a, b in zip(x, y)]

    def train_dataloader(self):
        return DataLoader(self._ds(0), batch_size=64)

    def val_dataloader(self):
        return DataLoader(self._ds(1), batch_size=64)


def tiny_mlp(in_features, num_classes):
    return MLP(in_features, num_classes, hidden=(12,))


TASKS = [
    LossTask("DigitsDataModule", model_args={"hidden": [16]}, noise_type="symmetric", noise_rate=0.4, seed=3),
    LossTask(DictBatches, model=tiny_mlp, noise_type="asymmetric", noise_rate=0.3, seed=1),
    LossTask("SyntheticDataModule", {"n_samples": 300, "n_features": 8, "n_classes": 4}, noise_type="pairflip",
             noise_rate=0.3, seed=2),
]
KW = dict(degree=3, popsize=3, epochs=8, sigma0=0.5, seed=7, tasks_per_generation=2, workers=0)


def _run(out, generations, resume=True, callback=None, **kw):
    return LossSearch(TASKS, out_dir=out, **{**KW, **kw}).run(generations, resume=resume, progress=False,
                                                              callback=callback)


def test_search_on_user_tasks_is_deterministic_and_randomises_tasks(tmp_path):
    a = _run(tmp_path / "a", 2)
    b = _run(tmp_path / "b", 2)
    assert a.coefficients == b.coefficients and a.fitness == b.fitness and a.history == [
        {**h, "sigma": h["sigma"]} for h in b.history
    ]
    assert a.evaluations == 6 and len(a.history) == 2
    assert [len(h["tasks"]) for h in a.history] == [2, 2]
    drawn = {tuple(h["tasks"]) for h in _run(tmp_path / "c", 4).history}
    assert len(drawn) > 1  # generations draw different tasks from the pool
    other = _run(tmp_path / "d", 2, seed=8)
    assert [h["gen_best_coefficients"] for h in other.history] != [h["gen_best_coefficients"] for h in a.history]
    lines = (tmp_path / "a" / "search_log.jsonl").read_text().splitlines()
    assert [json.loads(x)["generation"] for x in lines] == [1, 2]
    assert 0.0 < a.fitness <= 1.0 and 0.0 < a.control_fitness <= 1.0


def test_resume_after_interrupt_reaches_the_same_result(tmp_path):
    full = _run(tmp_path / "full", 3)

    def interrupt(generation, record):
        if generation == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "part", 3, callback=interrupt)
    assert len((tmp_path / "part" / "search_log.jsonl").read_text().splitlines()) == 2
    resumed = _run(tmp_path / "part", 3)  # a fresh object picks up the checkpoint
    assert resumed.history == full.history
    assert resumed.coefficients == full.coefficients and resumed.fitness == full.fitness
    assert resumed.control_fitness == full.control_fitness and resumed.evaluations == full.evaluations
    again = _run(tmp_path / "part", 3)  # a finished search asked for the same generations does nothing more
    assert again.evaluations == resumed.evaluations and again.fitness == resumed.fitness


def test_resume_refuses_a_different_configuration(tmp_path):
    _run(tmp_path / "x", 1, final_evaluation=False)
    with pytest.raises(ValueError, match="different search configuration"):
        _run(tmp_path / "x", 2, final_evaluation=False, popsize=4)


def test_any_executor_gives_the_in_process_result(tmp_path):
    a = _run(tmp_path / "inproc", 1)
    with ThreadPoolExecutor(2) as pool:
        b = LossSearch(TASKS, out_dir=tmp_path / "threads", executor=pool, **KW).run(1, progress=False)
    assert a.history == b.history and a.fitness == b.fitness
    with pytest.raises(TypeError, match="submit"):
        LossSearch(TASKS, executor=object())


@pytest.mark.slow
def test_local_process_pool_gives_the_in_process_result(tmp_path):
    kw = {**KW, "workers": 2}
    a = _run(tmp_path / "inproc", 1, final_evaluation=False)
    b = LossSearch(TASKS, out_dir=tmp_path / "pool", **{**kw, "final_evaluation": False}).run(1, progress=False)
    assert a.history == b.history


def test_written_preset_loads_into_taylor_loss(tmp_path):
    res = search_taylor_loss(TASKS, generations=1, out_dir=tmp_path / "s", progress=False, **KW)
    doc = yaml.safe_load(open(res.preset_path))
    assert doc["recipe"]["tasks"][1]["data"].endswith("DictBatches") and doc["fitness"] == pytest.approx(res.fitness)
    crit = TaylorLoss(preset=res.preset_path)
    assert crit.coefficients.tolist() == pytest.approx(res.coefficients, abs=1e-6)
    assert sum(res.coefficients) == pytest.approx(1.0)  # scaled to P(1) = 1


def test_bernstein_candidates_are_monotone_losses():
    g = torch.Generator().manual_seed(0)
    u = torch.linspace(0, 1, 101)
    for _ in range(20):
        c, _ = vector_to_coefficients((torch.randn(5, generator=g) * 2).tolist(), 5)
        p = sum(ck * u ** (k + 1) for k, ck in enumerate(c))
        assert (p.diff() >= -1e-6).all() and p[-1] == pytest.approx(1.0, abs=1e-6)


def test_task_forms_and_noise_models():
    dm = DigitsDataModule(noise_type="symmetric", noise_rate=0.2)
    own = load_task_data(LossTask(dm, noise_type="own"))
    assert not hasattr(dm, "train_dataset")  # the user's object is copied, never set up
    assert bool((own.y_train == own.y_train_clean).all())  # 'own': trained on the data's labels as they are
    flipped = load_task_data(LossTask(lambda: DigitsDataModule(), noise_type="pairflip", noise_rate=0.3))
    wrong = flipped.y_train != flipped.y_train_clean
    assert float(wrong.float().mean()) == pytest.approx(0.3, abs=0.01)
    assert bool((flipped.y_train[wrong] == (flipped.y_train_clean[wrong] + 1) % 10).all())
    asym = load_task_data(LossTask(DictBatches, noise_type="asymmetric", noise_rate=0.5))
    moved = asym.y_train_clean[asym.y_train != asym.y_train_clean]
    assert set(moved.tolist()) <= {0, 2} and asym.num_classes == 3  # even classes flip into the next one
    capped = load_task_data(LossTask("MNIST1DDataModule", {"n_samples": 400}, max_train_samples=50))
    assert capped.x_train.shape == (50, 40) and capped.x_val.shape[0] == 60


def test_bad_tasks_raise_clear_errors():
    with pytest.raises(ValueError, match="has no labels"):
        load_task_data(LossTask(DictBatches, {"labels": False}))
    with pytest.raises(ValueError, match="noise_type must be"):
        LossTask(noise_type="gaussian")
    with pytest.raises(ValueError, match="unknown name 'NoSuchModule'"):
        load_task_data(LossTask("NoSuchModule"))
    with pytest.raises(ValueError, match="at least one LossTask"):
        LossSearch([])
    with pytest.raises(ValueError, match="tasks_per_generation"):
        LossSearch(TASKS, tasks_per_generation=9)
    with pytest.raises(ValueError, match="unknown task keys"):
        LossTask.from_dict({"data": "DigitsDataModule", "noize": "symmetric:0.2"})


def test_search_and_heldout_pools_are_disjoint():
    def parts(tasks):
        return ({(t.data, json.dumps(t.data_args, sort_keys=True)) for t in tasks},
                {(t.model, json.dumps(t.model_args, sort_keys=True)) for t in tasks}, {t.noise_type for t in tasks})

    sd, sm, sn = parts(search_tasks())
    hd, hm, hn = parts(heldout_tasks())
    assert not sd & hd and not sm & hm and hn - sn == {"asymmetric"}


def test_robust_loss_beats_cross_entropy_under_noise():
    task = LossTask("DigitsDataModule", noise_rate=0.4, seed=5)
    data = load_task_data(task)
    kw = dict(make_model=lambda: MLP(64, 10, hidden=(64,)), epochs=120, lr=1e-2, seed=5)
    before = torch.random.get_rng_state()
    ce = train_and_evaluate(nn.CrossEntropyLoss(), data, **kw)
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's RNG is untouched
    tl = train_and_evaluate(TaylorLoss(), data, **kw)
    assert ce["memorized"] > 0.5 > tl["memorized"]
    assert tl["test_acc"] > ce["test_acc"] + 0.1


def test_search_loss_cli_with_user_tasks_config(tmp_path):
    from lightning_papers.cli import main

    config = tmp_path / "search.yaml"
    config.write_text(yaml.safe_dump({
        "out_dir": str(tmp_path / "cli"),
        "tasks": [{"data": {"class_path": "lightning_papers.data.DigitsDataModule", "init_args": {}},
                   "model": {"class_path": "lightning_papers.models.MLP", "init_args": {"hidden": [8]}},
                   "noise": "symmetric:0.4"}],
        "degree": 2, "generations": 1, "popsize": 2, "epochs": 3, "workers": 0, "tasks_per_generation": None,
        "progress": False, "preset_out": str(tmp_path / "p.yaml"),
    }))
    result = main(["search-loss", "--config", str(config)])
    assert TaylorLoss(preset=str(tmp_path / "p.yaml")).degree == 2 and result.generations == 1
    with pytest.raises(SystemExit):
        main(["search-loss", "--config", str(config), "--tasks", '[{"data": "DigitsDataModule", "noise": "gaussian:0.1"}]'])


@pytest.mark.parametrize("name", ["search_randomised.yaml", "search_my_task.yaml"])
def test_shipped_search_configs_parse(name):
    from pathlib import Path

    from jsonargparse import ActionConfigFile, ArgumentParser

    from lightning_papers.taylor_loss.commands import search_loss
    from lightning_papers.taylor_loss.loss import load_preset

    root = Path(__file__).resolve().parents[2]
    parser = ArgumentParser()
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_function_arguments(search_loss, as_positional=True, fail_untyped=False)
    cfg = parser.parse_args(["--config", str(root / "cli_configs/taylor_loss" / name)])
    if name == "search_randomised.yaml":  # the recipe of the shipped preset
        recipe = load_preset("robust")["recipe"]
        for key in ("degree", "basis", "popsize", "seed", "epochs", "lr", "sigma0", "tasks_per_generation"):
            assert cfg[key] == recipe[key], key
        assert [t.describe() for t in search_tasks(seeds=cfg.task_seeds)] == recipe["tasks"]
    else:
        assert [LossTask.from_dict(t).label for t in cfg.tasks] == ["DigitsDataModule/ConvNet/sym40/s0",
                                                                      "MNIST1DDataModule/MLP/pai30/s1"]
