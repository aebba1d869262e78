"""HeuriMentor (Aquila2, arXiv 2408.07410): Training State Monitor, Adaptive Training Engine and Data
Management Unit as Lightning callbacks, plus the Aquila2 architecture trained with FSDP2.

Example::

    >>> from lightning_papers.heurimentor import Stage, MixtureSampler
    >>> s = MixtureSampler({"web": 10, "code": 10}, [Stage({"web": 0.7, "code": 0.3})])
    >>> next(iter(s)).position
    0
"""

from lightning_papers.heurimentor.aquila2 import AQUILA2_SIZES, AQUILA2_TRAINING, Aquila2LM, aquila2_config
from lightning_papers.heurimentor.collectives import StepReducer
from lightning_papers.heurimentor.datamodule import DEFAULT_STAGES, MixtureDataModule, MixtureDataset
from lightning_papers.heurimentor.detectors import (
    PlateauDetector,
    RelativeSpikeDetector,
    RollingMeanSpikeDetector,
    SpikeDetector,
    ZScoreSpikeDetector,
)
from lightning_papers.heurimentor.dmu import DataManagementUnit, EXP3Policy
from lightning_papers.heurimentor.engine import AdaptiveTrainingEngine
from lightning_papers.heurimentor.events import (
    CheckpointEvent,
    Event,
    EventBus,
    HeldOutEvent,
    PlateauEvent,
    RollbackEvent,
    SkipEvent,
    SpikeEvent,
    StageChangeEvent,
    StepEvent,
    WeightsChangeEvent,
    get_bus,
)
from lightning_papers.heurimentor.history import StepHistory
from lightning_papers.heurimentor.mixture import Draw, MixtureSampler, Stage
from lightning_papers.heurimentor.monitor import TrainingStateMonitor
from lightning_papers.heurimentor.shards import ShardWindows, prepare_data
from lightning_papers.heurimentor.skip import HeldScheduler, SkipStepOptimizer
from lightning_papers.heurimentor.snapshots import SnapshotStore
from lightning_papers.heurimentor.trajectory import discrete_frechet, layer_std_curves, trajectory_distances

__all__ = [
    "AQUILA2_SIZES",
    "AQUILA2_TRAINING",
    "DEFAULT_STAGES",
    "AdaptiveTrainingEngine",
    "Aquila2LM",
    "CheckpointEvent",
    "DataManagementUnit",
    "Draw",
    "EXP3Policy",
    "Event",
    "EventBus",
    "HeldOutEvent",
    "HeldScheduler",
    "MixtureDataModule",
    "MixtureDataset",
    "MixtureSampler",
    "PlateauDetector",
    "PlateauEvent",
    "RelativeSpikeDetector",
    "RollbackEvent",
    "RollingMeanSpikeDetector",
    "SkipEvent",
    "SkipStepOptimizer",
    "SnapshotStore",
    "SpikeDetector",
    "SpikeEvent",
    "Stage",
    "StageChangeEvent",
    "StepEvent",
    "StepHistory",
    "StepReducer",
    "ShardWindows",
    "TrainingStateMonitor",
    "WeightsChangeEvent",
    "ZScoreSpikeDetector",
    "aquila2_config",
    "discrete_frechet",
    "get_bus",
    "layer_std_curves",
    "prepare_data",
    "trajectory_distances",
]
