"""Concrete k-means (Gao et al., ICASSP 2020): end-to-end deep k-means with a Gumbel-Softmax estimator.

* :mod:`~lightning_papers.concrete_kmeans.core`: plain PyTorch (``ConcreteKMeans``, ``concrete_kmeans_loss``).
* :mod:`~lightning_papers.concrete_kmeans.embedding`: ``ClusterEmbedding`` (skip path + fixed-scale code).
* :mod:`~lightning_papers.concrete_kmeans.module`: ``DeepConcreteKMeans`` LightningModule (+ IDEC, DCN, two-step).
* :mod:`~lightning_papers.concrete_kmeans.estimator`: ``ConcreteKMeansClusterer`` (scikit-learn style).
* :mod:`~lightning_papers.concrete_kmeans.selection`: unsupervised choices between partitions (the k-means floor).
* :mod:`~lightning_papers.concrete_kmeans.distributed`: rank-identical initialisation, gathered validation scores.
* :mod:`~lightning_papers.concrete_kmeans.data`: MNIST / USPS / 20 Newsgroups data modules from local files.
* :mod:`~lightning_papers.concrete_kmeans.datasets`: development and held-out tables of the benchmark.
"""

from lightning_papers.concrete_kmeans.core import (
    ConcreteKMeans,
    ConcreteKMeansOutput,
    concrete_kmeans_loss,
    dec_soft_assignment,
    dec_target_distribution,
    gumbel_softmax_assignment,
    kmeans,
    kmeans_plusplus,
    squared_distances,
    temperature_at,
)
from lightning_papers.concrete_kmeans.data import MNISTDataModule, NewsgroupsDataModule, USPSDataModule
from lightning_papers.concrete_kmeans.embedding import ClusterEmbedding, ScalarNorm, pca_projection
from lightning_papers.concrete_kmeans.estimator import ConcreteKMeansClusterer
from lightning_papers.concrete_kmeans.module import (
    DeepConcreteKMeans,
    make_conv_autoencoder,
    make_mlp_autoencoder,
)
from lightning_papers.concrete_kmeans.selection import (
    compare_partitions,
    partition_stability,
    scatter_ratio,
    select_partition,
)

__all__ = [
    "ClusterEmbedding",
    "ConcreteKMeans",
    "ConcreteKMeansClusterer",
    "ConcreteKMeansOutput",
    "DeepConcreteKMeans",
    "MNISTDataModule",
    "NewsgroupsDataModule",
    "ScalarNorm",
    "USPSDataModule",
    "compare_partitions",
    "concrete_kmeans_loss",
    "dec_soft_assignment",
    "dec_target_distribution",
    "gumbel_softmax_assignment",
    "kmeans",
    "kmeans_plusplus",
    "make_conv_autoencoder",
    "make_mlp_autoencoder",
    "partition_stability",
    "pca_projection",
    "scatter_ratio",
    "select_partition",
    "squared_distances",
    "temperature_at",
]
