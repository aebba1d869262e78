"""Shared clustering metrics: Hungarian ACC vs brute force, the Metric vs the functional, NMI/ARI vs sklearn."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from lightning_papers.metrics import (
    ClusteringAccuracy,
    adjusted_rand_index,
    cluster_class_mapping,
    clustering_accuracy,
    clustering_scores,
    normalized_mutual_info,
)


def _brute_force_acc(preds: np.ndarray, target: np.ndarray, k: int) -> float:
    best = 0.0
    for perm in itertools.permutations(range(k)):
        mapped = np.array(perm)[preds]
        best = max(best, float((mapped == target).mean()))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_hungarian_accuracy_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    k = 5
    target = rng.integers(0, k, 60)
    preds = np.where(rng.random(60) < 0.6, (target + seed) % k, rng.integers(0, k, 60))
    assert float(clustering_accuracy(preds, target)) == pytest.approx(_brute_force_acc(preds, target, k))


def test_accuracy_is_permutation_invariant_and_handles_extra_clusters():
    target = torch.tensor([0, 0, 1, 1, 2, 2])
    assert float(clustering_accuracy(torch.tensor([2, 2, 0, 0, 1, 1]), target)) == 1.0
    # 4 clusters for 3 classes: one surplus cluster counts as wrong
    assert float(clustering_accuracy(torch.tensor([0, 0, 1, 1, 2, 3]), target)) == pytest.approx(5 / 6)
    assert cluster_class_mapping([2, 2, 0, 0, 1, 1], target) == {0: 1, 1: 2, 2: 0}


def test_metric_accumulates_like_the_functional():
    rng = np.random.default_rng(0)
    preds, target = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    metric = ClusteringAccuracy(num_clusters=4)
    for chunk in np.array_split(np.arange(200), 7):
        metric.update(torch.tensor(preds[chunk]), torch.tensor(target[chunk]))
    assert float(metric.compute()) == pytest.approx(float(clustering_accuracy(preds, target)))
    # A per-batch matching would be optimistic; the accumulated one is not.
    per_batch = np.mean([float(clustering_accuracy(preds[c], target[c])) for c in np.array_split(np.arange(200), 7)])
    assert per_batch >= float(metric.compute())
    metric.reset()
    assert float(metric.compute()) == 0.0


def test_nmi_and_ari_match_sklearn():
    rng = np.random.default_rng(1)
    preds, target = rng.integers(0, 6, 300), rng.integers(0, 5, 300)
    preds[:150] = target[:150]
    assert float(normalized_mutual_info(preds, target)) == pytest.approx(normalized_mutual_info_score(target, preds),
                                                                         abs=1e-5)
    assert float(adjusted_rand_index(preds, target)) == pytest.approx(adjusted_rand_score(target, preds), abs=1e-5)
    assert clustering_scores([0, 0, 1, 1], [1, 1, 0, 0]) == {"nmi": 1.0, "ari": 1.0, "acc": 1.0}


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="differ in length"):
        clustering_accuracy([0, 1], [0, 1, 1])
    with pytest.raises(TypeError, match="integer labels"):
        clustering_accuracy(torch.tensor([0.5, 1.0]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="1-D"):
        clustering_accuracy(np.zeros((2, 2), dtype=int), np.zeros((2, 2), dtype=int))
    metric = ClusteringAccuracy(num_clusters=2)
    with pytest.raises(ValueError, match=r"cluster ids must lie in \[0, 1\]"):
        metric.update(torch.tensor([0, 2]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="num_clusters"):
        ClusteringAccuracy(num_clusters=0)
