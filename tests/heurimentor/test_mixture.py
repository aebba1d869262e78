"""MixtureSampler / Stage / MixtureDataModule: shares, stage budgets, resume, ranks, exclusions, bad input."""

from collections import Counter

import pytest
import torch

from lightning_papers.heurimentor import MixtureDataModule, MixtureSampler, Stage

SIZES = {"a": 3000, "b": 3000, "c": 3000}


def take(sampler, n):
    out = []
    while len(out) < n:
        out.append(sampler.next_round()[sampler.rank])
    return out


def test_shares_within_two_percent_over_10k():
    s = MixtureSampler(SIZES, [Stage({"a": 0.5, "b": 0.3, "c": 0.2})], seed=1)
    counts = Counter(d.source for d in take(s, 10_000))
    for name, target in {"a": 0.5, "b": 0.3, "c": 0.2}.items():
        assert abs(counts[name] / 10_000 - target) < 0.02, counts
    assert s.consumed_per_source == {k: counts[k] for k in SIZES}


def test_stage_switches_exactly_at_budget_and_across_resume():
    stages = [Stage({"a": 0.5, "b": 0.5}, tokens=4000, name="s0"), Stage({"c": 1.0}, tokens=800, name="s1"), Stage({"a": 1.0})]
    s = MixtureSampler(SIZES, stages, seed=0, tokens_per_sample=4)
    draws = take(s, 1400)
    # 4000 tokens / 4 per sample = samples 0..999 in stage 0, 200 samples in stage 1, then stage 2
    assert {d.source for d in draws[:1000]} == {"a", "b"}
    assert {d.source for d in draws[1000:1200]} == {"c"}
    assert {d.source for d in draws[1200:]} == {"a"}
    # resume in the middle of stage 0: the switch still happens at exactly the same sample
    r = MixtureSampler(SIZES, stages, seed=0, tokens_per_sample=4)
    first = take(r, 700)
    state = r.state_dict()
    r2 = MixtureSampler(SIZES, stages, seed=0, tokens_per_sample=4)
    r2.load_state_dict(state)
    assert first + take(r2, 700) == draws


def test_resume_with_prefetch_and_live_changes_is_exact():
    stages = [Stage({"a": 0.5, "b": 0.3, "c": 0.2})]
    ref = MixtureSampler(SIZES, stages, seed=3)
    live = MixtureSampler(SIZES, stages, seed=3)
    a = take(ref, 50)
    b = take(live, 50)
    ref.set_weights({"a": 0.1, "b": 0.1, "c": 0.8})
    live.set_weights({"a": 0.1, "b": 0.1, "c": 0.8})
    a += take(ref, 150)
    b += take(live, 60)  # "trained" up to here; the loader prefetched 40 more
    trained_last = b[-1].position
    b += take(live, 40)
    state = live.state_dict(position=live.next_round_after(trained_last))
    resumed = MixtureSampler(SIZES, stages, seed=3)
    resumed.load_state_dict(state)
    assert b[:110] + take(resumed, 90) == a
    assert Counter(d.source for d in a[50:])["c"] > 100


def test_two_ranks_partition_the_single_process_stream():
    stages = [Stage({"a": 0.5, "b": 0.3, "c": 0.2})]
    single = take(MixtureSampler(SIZES, stages, seed=5), 2000)
    r0 = list(MixtureSampler(SIZES, stages, seed=5, rank=0, world_size=2, samples_per_epoch=2000))
    r1 = list(MixtureSampler(SIZES, stages, seed=5, rank=1, world_size=2, samples_per_epoch=2000))
    assert len(r0) == len(r1) == 1000
    merged = sorted(r0 + r1, key=lambda d: d.position)
    assert merged == single
    ids0 = {(d.source, d.index) for d in r0}
    ids1 = {(d.source, d.index) for d in r1}
    assert not ids0 & ids1  # no window is given to both ranks in a pass
    assert len(ids0) == 1000 and len(ids1) == 1000


def test_resume_on_a_different_world_size():
    stages = [Stage({"a": 0.5, "b": 0.5})]
    single = take(MixtureSampler(SIZES, stages, seed=7), 600)
    r0 = MixtureSampler(SIZES, stages, seed=7, rank=0, world_size=2)
    r1 = MixtureSampler(SIZES, stages, seed=7, rank=1, world_size=2)
    part = sorted(take(r0, 200) + take(r1, 200), key=lambda d: d.position)
    one = MixtureSampler(SIZES, stages, seed=7, rank=0, world_size=1)
    one.load_state_dict(r0.state_dict())
    assert part + take(one, 200) == single


def test_excluded_range_is_skipped_and_its_windows_never_reappear():
    stages = [Stage({"a": 0.5, "b": 0.5})]
    s = MixtureSampler({"a": 40, "b": 40}, stages, seed=0)
    take(s, 10)
    saved = s.state_dict()
    bad = take(s, 10)  # positions 10..19 turn out to be bad: roll back and exclude them
    s.load_state_dict(saved)
    s.exclude_range(10, 20)
    after = take(s, 200)  # several passes over both sources
    bad_ids = {(d.source, d.index) for d in bad}
    assert all(d.position >= 20 for d in after)
    assert not bad_ids & {(d.source, d.index) for d in after}
    assert len(s.blocked_ids) == 10 and s.excluded_ranges == [(10, 20)]


@pytest.mark.parametrize(
    "weights, match",
    [({"a": 0.5, "b": 0.6}, "sum to 1"), ({"a": 1.2, "b": -0.2}, ">= 0"), ({}, "non-empty")],
)
def test_bad_stage_weights(weights, match):
    with pytest.raises(ValueError, match=match):
        Stage(weights)


def test_bad_sampler_input():
    with pytest.raises(ValueError, match="unknown source"):
        MixtureSampler(SIZES, [Stage({"a": 0.5, "zzz": 0.5})])
    with pytest.raises(ValueError, match="no token budget"):
        MixtureSampler(SIZES, [Stage({"a": 1.0}), Stage({"b": 1.0})])
    with pytest.raises(ValueError, match="rank"):
        MixtureSampler(SIZES, [Stage({"a": 1.0})], rank=2, world_size=2)
    s = MixtureSampler(SIZES, [Stage({"a": 1.0})])
    with pytest.raises(ValueError, match="unknown source"):
        s.set_weights({"nope": 1.0})
    with pytest.raises(ValueError, match="sum to 1"):
        s.set_weights({"a": 0.3})
    with pytest.raises(ValueError, match="seed"):
        MixtureSampler(SIZES, [Stage({"a": 1.0})], seed=1).load_state_dict(s.state_dict())


def test_add_source_mid_run_keeps_ids_stable():
    s = MixtureSampler({"a": 10, "b": 10}, [Stage({"a": 0.5, "b": 0.5})])
    take(s, 5)
    s.add_source("new", 7)
    s.set_weights({"a": 0.0, "b": 0.0, "new": 1.0})
    draws = take(s, 7)
    assert {d.source for d in draws} == {"new"}
    assert sorted(d.index for d in draws) == list(range(7))
    assert s.source_offset("new") == 20 and s.source_offset("b") == 10


def test_datamodule_batches_carry_source_and_sample_ids():
    dm = MixtureDataModule(seq_len=16, batch_size=8, max_chars=8000,
                           stages=[{"weights": {"prose": 0.5, "code": 0.25, "qa": 0.25}}])
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == (8, 16) and torch.equal(batch["input_ids"], batch["labels"])
    assert batch["positions"].tolist() == list(range(8))
    for sid, sample, ids in zip(batch["source_ids"], batch["sample_ids"], batch["input_ids"]):
        name = dm.source_names[int(sid)]
        index = int(sample) - dm.sampler.source_offset(name)
        assert torch.equal(dm.train_sets[name][index], ids)
    held = dm.heldout_batches()
    assert sorted(held) == ["code", "prose", "qa"] and held["qa"]["input_ids"].shape[1] == 16
    with pytest.raises(ValueError, match="unknown source"):
        MixtureDataModule(sources=["prose", "wiki"])
