"""Token shards: prepare-data (text, JSONL, HF tokenizer), memory-mapped windows, atomicity, bad input,
ranks x workers, and exact kill-and-resume of a Trainer reading shards."""

import json
import os

import lightning.pytorch as L
import numpy as np
import pytest
import torch

from lightning_papers.heurimentor import (
    DataManagementUnit,
    MixtureDataModule,
    MixtureSampler,
    ShardWindows,
    Stage,
    prepare_data,
)
from lightning_papers.heurimentor import shards as shards_mod
from lightning_papers.heurimentor.data import builtin_source_text
from lightning_papers.heurimentor.datamodule import MixtureDataset


def make_source(tmp_path, name, text, **kwargs):
    src = tmp_path / f"{name}.txt"
    src.write_text(text)
    out = tmp_path / "shards" / name
    prepare_data([str(src)], str(out), progress=False, **kwargs)
    return out


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("src")
    return {name: make_source(tmp, name, builtin_source_text(name, 40_000), shard_tokens=9_000)
            for name in ("prose", "code", "qa")}


def test_windows_equal_the_text_bytes_across_shard_files(tmp_path):
    text = builtin_source_text("qa", 10_000)  # ASCII: one byte per character
    out = make_source(tmp_path, "p", text, shard_tokens=1000)
    index = json.loads((out / "index.json").read_text())
    assert index["dtype"] == "uint16" and index["num_tokens"] == len(text.encode()) and len(index["files"]) == 10
    w = ShardWindows(out, seq_len=64)
    assert len(w) == 10 * (1000 // 64)  # windows never cross a file boundary
    data = np.frombuffer(text.encode(), dtype=np.uint8)
    f, k = divmod(37, 1000 // 64)  # window 37: file f, k-th window in it
    assert torch.equal(w[37], torch.from_numpy(data[f * 1000 + k * 64: f * 1000 + (k + 1) * 64].astype(np.int64)))


def test_jsonl_and_a_local_hf_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "</s>": 1, "hello": 2, "world": 3, "again": 4}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="</s>").save_pretrained(tmp_path / "tok")
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "hello world"}) + "\n" + json.dumps({"text": "world again x"}) + "\n")
    prepare_data([str(tmp_path / "a.jsonl")], str(tmp_path / "s"), tokenizer=str(tmp_path / "tok"), progress=False)
    w = ShardWindows(tmp_path / "s", seq_len=7)
    assert w[0].tolist() == [2, 3, 1, 3, 4, 0, 1]  # EOS after each document, unknown word -> [UNK]
    # sources made with different tokenizers cannot be mixed; a shard made with another tokenizer is refused
    make_source(tmp_path, "b", "hello world " * 50)
    with pytest.raises(ValueError, match="tokenizer"):
        MixtureDataModule(token_shards={"a": str(tmp_path / "s"), "b": str(tmp_path / "shards" / "b")}, seq_len=4,
                          heldout_windows=1, stages=[{"weights": {"a": 0.5, "b": 0.5}}]).setup()
    with pytest.raises(ValueError, match="not with the given tokenizer"):
        MixtureDataModule(token_shards={"b": str(tmp_path / "shards" / "b")}, tokenizer=str(tmp_path / "tok"),
                          seq_len=4, heldout_windows=1, stages=[{"weights": {"b": 1.0}}]).setup()
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match=r"hold no text to tokenize: \[.*empty\.txt'\]"):
        prepare_data([str(tmp_path / "empty.txt")], str(tmp_path / "s3"), progress=False)
    assert not (tmp_path / "s3").exists()  # nothing half-made is left behind
    with pytest.raises(ValueError, match="key 'text'"):
        (tmp_path / "bad.jsonl").write_text('{"body": "x"}\n')
        prepare_data([str(tmp_path / "bad.jsonl")], str(tmp_path / "s2"), progress=False)


def test_interrupted_prepare_leaves_nothing_complete_and_truncation_is_caught(tmp_path, monkeypatch):
    (tmp_path / "a.txt").write_text("x" * 5000)

    class Boom(RuntimeError):
        pass

    real = shards_mod._ShardWriter.write
    calls = []

    def write_then_die(self, tokens):
        real(self, tokens)
        calls.append(1)
        raise Boom("killed")

    monkeypatch.setattr(shards_mod._ShardWriter, "write", write_then_die)
    with pytest.raises(Boom):
        prepare_data([str(tmp_path / "a.txt")], str(tmp_path / "s"), progress=False, shard_tokens=100)
    assert calls and not (tmp_path / "s").exists() and not list(tmp_path.glob(".s.*"))
    with pytest.raises(FileNotFoundError, match="not found"):
        ShardWindows(tmp_path / "s", 16)
    monkeypatch.setattr(shards_mod._ShardWriter, "write", real)
    prepare_data([str(tmp_path / "a.txt")], str(tmp_path / "s"), progress=False, shard_tokens=1000)
    (tmp_path / "s" / "index.json").rename(tmp_path / "index.bak")  # what an interrupted writer would leave
    with pytest.raises(FileNotFoundError, match="no index.json"):
        ShardWindows(tmp_path / "s", 16)
    (tmp_path / "index.bak").rename(tmp_path / "s" / "index.json")
    with open(tmp_path / "s" / "tokens-00002.bin", "r+b") as f:
        f.truncate(1000)
    with pytest.raises(ValueError, match=r"tokens-00002.bin has 1000 bytes but index.json says 2000"):
        MixtureDataModule(token_shards={"a": str(tmp_path / "s")}, stages=[{"weights": {"a": 1.0}}]).setup()
    with pytest.raises(FileExistsError, match="already exists"):
        prepare_data([str(tmp_path / "a.txt")], str(tmp_path / "s"), progress=False)


def test_bad_mixture_input_names_the_value(sources):
    shards = {k: str(v) for k, v in sources.items()}
    with pytest.raises(ValueError, match=r"unknown source\(s\) \['web'\]"):
        MixtureDataModule(token_shards=shards, stages=[{"weights": {"prose": 0.5, "web": 0.5}}])
    dm = MixtureDataModule(token_shards=shards, seq_len=32, batch_size=4,
                           stages=[{"weights": {"prose": 1.0}, "tokens": 1000}, {"weights": {"qa": 1.0}}])
    with pytest.raises(ValueError, match=r"token budget 1000 is not a multiple of the global batch .* = 128"):
        dm.setup()
    with pytest.raises(ValueError, match=r"not a multiple of tokens_per_sample x world_size = 4 x 2 = 8"):
        MixtureSampler({"a": 10}, [Stage({"a": 1.0}, tokens=12), Stage({"a": 1.0})], tokens_per_sample=4, world_size=2)
    a = MixtureSampler({"prose": 10, "code": 10}, [Stage({"prose": 1.0})])
    b = MixtureSampler({"prose": 10, "qa": 10}, [Stage({"prose": 1.0})])
    with pytest.raises(ValueError, match=r"missing here: \['code'\], not in the checkpoint: \['qa'\]"):
        b.load_state_dict(a.state_dict())
    c = MixtureSampler({"prose": 10, "code": 11}, [Stage({"prose": 1.0})])
    with pytest.raises(ValueError, match="'code': checkpoint 10 vs now 11"):
        c.load_state_dict(a.state_dict())


def test_ranks_times_workers_read_the_single_process_stream(sources):
    shards = {k: str(v) for k, v in sources.items()}
    stages = [{"weights": {"prose": 0.5, "code": 0.3, "qa": 0.2}}]

    def stream(rank, world, workers, n):
        dm = MixtureDataModule(token_shards=shards, seq_len=32, batch_size=4, stages=stages, num_workers=workers)
        dm.setup()
        dm.sampler = MixtureSampler(dm.sampler.source_sizes, dm.stages, rank=rank, world_size=world, tokens_per_sample=32)
        dm.train_dataset = MixtureDataset(dm.train_sets, dm.sampler)
        loader = torch.utils.data.DataLoader(dm.train_dataset, batch_size=4, sampler=dm.sampler, num_workers=workers,
                                             multiprocessing_context="fork" if workers else None)
        out = []
        for batch, _ in zip(loader, range(n)):
            out += list(zip(batch["positions"].tolist(), batch["sample_ids"].tolist(), map(tuple, batch["input_ids"].tolist())))
        return out

    single = stream(0, 1, 0, 16)
    ranks = stream(0, 2, 2, 8) + stream(1, 2, 2, 8)
    assert sorted(ranks) == sorted(single)  # 2 ranks x 2 workers: disjoint, together the 1-process stream
    assert len({p for p, _, _ in ranks}) == 64


class Spy(L.Callback):
    def __init__(self):
        self.ids, self.loss = {}, {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.ids[trainer.global_step - 1] = batch["sample_ids"].tolist()
        self.loss[trainer.global_step - 1] = float(outputs["loss"])


class Stop(L.Callback):
    def __init__(self, at):
        self.at = at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.at:
            trainer.should_stop = True


@pytest.mark.slow
def test_kill_and_resume_on_shards_is_exact(sources, tmp_path):
    from lightning_papers.heurimentor import AdaptiveTrainingEngine, Aquila2LM, TrainingStateMonitor

    shards = {k: str(v) for k, v in sources.items()}
    stages = [{"weights": {"prose": 0.6, "code": 0.3, "qa": 0.1}, "tokens": 32 * 4 * 5},
              {"weights": {"prose": 0.2, "code": 0.2, "qa": 0.6}}]

    def run(root, extra=(), ckpt=None, seed=0):
        L.seed_everything(seed, verbose=False)
        spy = Spy()
        cbs = [TrainingStateMonitor(plateau_window=0, dashboard=False), AdaptiveTrainingEngine(), DataManagementUnit(), spy, *extra]
        trainer = L.Trainer(max_steps=10, callbacks=cbs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, default_root_dir=root, use_distributed_sampler=False)
        dm = MixtureDataModule(token_shards=shards, seq_len=32, batch_size=4, stages=stages, num_workers=1)
        trainer.fit(Aquila2LM("tiny", warmup_steps=2), dm, ckpt_path=ckpt)
        return trainer, spy

    _, full = run(tmp_path / "a")
    t1, first = run(tmp_path / "b", extra=[Stop(6)])
    t1.save_checkpoint(tmp_path / "mid.ckpt")
    _, second = run(tmp_path / "c", ckpt=tmp_path / "mid.ckpt", seed=123)
    ids, loss = {**first.ids, **second.ids}, {**first.loss, **second.loss}
    assert sorted(second.ids) == [6, 7, 8, 9]
    assert [ids[s] for s in range(10)] == [full.ids[s] for s in range(10)]
    assert [loss[s] for s in range(10)] == pytest.approx([full.loss[s] for s in range(10)], rel=1e-6)


def test_token_windows_are_picklable_without_their_maps(sources):
    import pickle

    w = ShardWindows(sources["qa"], 16)
    _ = w[3]
    clone = pickle.loads(pickle.dumps(w))
    assert clone._maps == {} and torch.equal(clone[3], w[3]) and os.getpid() == clone._pid
