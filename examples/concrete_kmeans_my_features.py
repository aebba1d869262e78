"""Cluster an array of embeddings (or any feature matrix) with concrete k-means, scikit-learn style.

Replace ``load_my_features`` with your own ``(n_samples, n_features)`` array (e.g. ``np.load("emb.npy")``).
Runs in about half a minute on a CPU with the bundled digits as stand-in features.

    python examples/concrete_kmeans_my_features.py
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits

from lightning_papers.concrete_kmeans import ConcreteKMeansClusterer
from lightning_papers.metrics import clustering_scores


def load_my_features() -> tuple[np.ndarray, np.ndarray | None]:
    """Your features here; labels are optional and only used to score the clusters."""
    digits = load_digits()
    return digits.data.astype(np.float32) / 16.0, digits.target


def main() -> None:
    X, y = load_my_features()
    # The defaults were chosen on development tables; "global" scaling keeps k-means geometry. The embedding
    # keeps the input's principal axes beside a learned code; each of 3 runs starts joint training at
    # scikit-learn's KMeans partition of X (centroid_init="input_kmeans") and refines it. Their partition is
    # kept only if the runs agree more than 3 k-means runs on X do (floor="stability", no labels used);
    # otherwise the answer is k-means on X.
    clusterer = ConcreteKMeansClusterer(n_clusters=10, random_state=0)
    labels = clusterer.fit_predict(X)
    print("partition kept:", clusterer.selected_, "stability (mean pairwise ARI):",
          {k: round(v, 3) for k, v in clusterer.selection_scores_.items()})
    print("cluster sizes:", np.bincount(labels, minlength=10).tolist())
    print("embedding of the first sample:", np.round(clusterer.embed(X[:1])[0], 3).tolist())
    if y is not None:
        print("concrete k-means:", clustering_scores(labels, y))
        print("k-means on raw X:", clustering_scores(KMeans(10, n_init=10, random_state=0).fit_predict(X), y))


if __name__ == "__main__":
    main()
