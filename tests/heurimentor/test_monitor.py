"""Detectors, plateau, weight trajectory, events and dashboard of the Training State Monitor."""

import math

import numpy as np
import pytest
import torch

from lightning_papers.heurimentor import (
    EventBus,
    PlateauDetector,
    RelativeSpikeDetector,
    RollingMeanSpikeDetector,
    SpikeEvent,
    StepEvent,
    TrainingStateMonitor,
    ZScoreSpikeDetector,
    discrete_frechet,
    layer_std_curves,
    trajectory_distances,
)
from lightning_papers.heurimentor.monitor import make_detector, per_sample_causal_lm_loss


def stream(n=200, seed=0):
    rng = np.random.default_rng(seed)
    return 3.0 - np.linspace(0, 1, n) + 0.02 * rng.standard_normal(n)


@pytest.mark.parametrize(
    "det",
    [RelativeSpikeDetector(0.2, warmup=10), RollingMeanSpikeDetector(10, 1.5), ZScoreSpikeDetector(64, 6.0, warmup=32)],
)
def test_detectors_fire_exactly_at_the_injected_spike(det):
    values = stream()
    values[120] *= 3.0
    fired = []
    for i, v in enumerate(values):
        hit, ref = det.check(v)
        if hit:
            fired.append(i)
            assert ref < v
        else:
            det.accept(v)
    assert fired == [120]
    state = det.state_dict()
    clone = make_detector({"kind": det.kind, "metric": "loss", **({"threshold": 0.2, "warmup": 10} if det.kind == "relative" else {})})
    clone.load_state_dict(state)
    assert clone.check(10.0)[0] == det.check(10.0)[0]


def test_plateau_fires_within_one_window_on_flat_loss_and_not_while_falling():
    d = PlateauDetector(window=20, tolerance=0.01)
    falling = [d.update(v) for v in np.linspace(4.0, 2.0, 60)]
    assert all(x is None for x in falling)
    d2 = PlateauDetector(window=20, tolerance=0.01)
    fired = [i for i, v in enumerate([2.0] * 40) if d2.update(v) is not None]
    assert fired and fired[0] <= 19  # within one window


def test_discrete_frechet_matches_brute_force_and_trajectory_scaling():
    rng = np.random.default_rng(0)
    p, q = rng.random((5, 2)), rng.random((4, 2))

    def brute(i, j):  # the recursive definition
        d = float(np.linalg.norm(p[i] - q[j]))
        if i == 0 and j == 0:
            return d
        prev = [brute(a, b) for a, b in ((i - 1, j), (i - 1, j - 1), (i, j - 1)) if a >= 0 and b >= 0]
        return max(min(prev), d)

    assert math.isclose(discrete_frechet(p, q), brute(4, 3))
    a = {"mlp.up_proj.weight": [0.02, 0.03, 0.04]}
    assert trajectory_distances(a, 0, a, 1000) == {"mlp.up_proj.weight": 0.0}
    b = {"mlp.up_proj.weight": [0.02 * 1.5, 0.03 * 1.5, 0.04 * 1.5]}
    d1 = trajectory_distances(a, 0, b, 1_000_000)["mlp.up_proj.weight"]
    d2 = trajectory_distances(a, 0, b, 2_000_000)["mlp.up_proj.weight"]
    assert d1 > 0 and math.isclose(d1, 2 * d2)
    assert math.isclose(d1, 0.02 * 1e9 / 1e6)  # largest point gap (0.06 - 0.04) per 1B tokens
    with pytest.raises(ValueError, match="tokens_b > tokens_a"):
        trajectory_distances(a, 10, b, 10)


def test_layer_std_curves_equal_torch_std_and_identical_checkpoints_give_zero():
    torch.manual_seed(0)
    model = torch.nn.Module()
    model.layers = torch.nn.ModuleList([torch.nn.Linear(8, 8) for _ in range(3)])
    model.head = torch.nn.Linear(8, 2)
    curves = layer_std_curves(model.named_parameters())
    assert sorted(curves) == ["bias", "weight"]
    np.testing.assert_allclose(curves["weight"], [float(lin.weight.detach().std()) for lin in model.layers], rtol=1e-6)
    assert trajectory_distances(curves, 0, layer_std_curves(model.named_parameters()), 10)["weight"] == 0.0
    with torch.no_grad():
        for layer in model.layers:
            layer.weight.mul_(2.0)
    assert trajectory_distances(curves, 0, layer_std_curves(model.named_parameters()), 10)["weight"] > 0


def test_event_bus_dispatches_subclasses_and_validates():
    bus = EventBus()
    spikes, everything = [], []
    bus.subscribe(SpikeEvent, spikes.append)
    from lightning_papers.heurimentor import Event

    bus.subscribe(Event, everything.append)
    bus.publish(StepEvent(step=1, tokens=10))
    bus.publish(SpikeEvent(step=2, tokens=20, loss=5.0))
    assert [e.step for e in spikes] == [2] and len(everything) == 2
    assert bus.of_type(StepEvent)[0].as_dict()["event"] == "StepEvent"
    with pytest.raises(TypeError):
        bus.subscribe(int, print)
    with pytest.raises(TypeError):
        bus.publish("not an event")


def test_per_sample_loss_matches_cross_entropy():
    torch.manual_seed(0)
    logits, labels = torch.randn(3, 6, 11), torch.randint(0, 11, (3, 6))
    per = per_sample_causal_lm_loss(logits, labels)
    ref = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1))
    assert per.shape == (3,) and torch.allclose(per.mean(), ref, atol=1e-6)


def test_monitor_validates_and_writes_a_dashboard(tmp_path):
    with pytest.raises(ValueError, match="unknown detector kind"):
        TrainingStateMonitor(detectors=[{"kind": "magic"}])
    with pytest.raises(ValueError, match="distinct"):
        TrainingStateMonitor(detectors=[{"kind": "zscore"}, {"kind": "zscore"}])
    tsm = TrainingStateMonitor()
    for i, v in enumerate(stream(30)):
        tsm.history.append(i, 100 * i, v, 1.0, i == 20, i == 20, {"a": v, "b": v + 0.1})
    for rec in [(0, 0, {"a": 0.5, "b": 0.5}), (10, 1000, {"a": 0.2, "b": 0.8})]:
        tsm.weights_history.append(*rec)
    for rec in [(10, 1000, {"mlp": 1.0, "attn": 0.5}), (20, 2000, {"mlp": 0.5, "attn": 0.2})]:
        tsm.trajectory_dist.append(*rec)
    import matplotlib

    backend = matplotlib.get_backend()
    path = tsm.save_dashboard(tmp_path / "dash.png")
    assert path.stat().st_size > 10_000
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.get_backend() == backend  # drawn on a Figure: the user's backend is untouched


def _same_state(a, b) -> bool:
    """Whole-state equality: every key, tensors element-wise (NaN padding included), plain values by ==."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a.nan_to_num(-1.0), b.nan_to_num(-1.0))
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("make", [
    lambda: RelativeSpikeDetector(0.2, warmup=10),
    lambda: RollingMeanSpikeDetector(10, 1.5),
    lambda: ZScoreSpikeDetector(64, 6.0, warmup=32),
    lambda: PlateauDetector(window=20, tolerance=0.01, smoothing=0.5),
], ids=["relative", "rolling_mean", "zscore", "plateau"])
def test_detector_state_round_trip_is_whole_and_continues_identically(make):
    values = stream(300, seed=4)
    values[[150, 220]] *= 3.0

    def feed(det, chunk):
        out = []
        for v in chunk:
            if isinstance(det, PlateauDetector):
                out.append(det.update(float(v)))
                continue
            hit, ref = det.check(float(v))
            out.append((hit, ref))
            if not hit:
                det.accept(float(v))
        return out

    live = make()
    feed(live, values[:140])  # past warm-up and a full window: every field is populated
    state = live.state_dict()
    resumed = make()
    assert not _same_state(resumed.state_dict(), state)  # a fresh detector differs, so the comparison can fail
    resumed.load_state_dict(state)
    assert _same_state(resumed.state_dict(), state)
    assert feed(resumed, values[140:]) == feed(live, values[140:])  # same decisions and references, spikes included
    assert _same_state(resumed.state_dict(), live.state_dict())


def test_monitor_refuses_a_state_that_is_not_its_own():
    from lightning_papers.heurimentor import TrainingStateMonitor

    with pytest.raises(ValueError, match=r"not a TrainingStateMonitor state \(missing \['detectors'"):
        TrainingStateMonitor().load_state_dict({"foo": 1})
