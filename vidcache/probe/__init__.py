"""vidcache.probe: linear, attentive, kNN and MLP probes on cached features.

All trained probes share one loop (`train_grid`): a grid of heads over lr x wd trained in one pass,
selected on val, reported on test.
"""

from vidcache.probe.attentive import AttentiveClassifier, AttentiveConfig, AttentiveHead, AttentiveProbe
from vidcache.probe.data import ProbeData, check_finite, load_split, subsample
from vidcache.probe.knn import KNNConfig, KNNProbe, knn_scores
from vidcache.probe.linear import LinearConfig, LinearHead, LinearProbe
from vidcache.probe.metrics import classification_metrics
from vidcache.probe.mlp import MLPConfig, MLPHead, MLPProbe
from vidcache.probe.run import PROBES, make_config, run_probe
from vidcache.probe.train import GridResult, ProbeConfig, TrainConfig, train_grid

__all__ = [
    "AttentiveClassifier", "AttentiveConfig", "AttentiveHead", "AttentiveProbe", "GridResult", "KNNConfig",
    "KNNProbe", "LinearConfig", "LinearHead", "LinearProbe", "MLPConfig", "MLPHead", "MLPProbe", "PROBES",
    "ProbeConfig", "ProbeData", "TrainConfig", "check_finite", "classification_metrics", "knn_scores",
    "load_split", "make_config", "run_probe", "subsample", "train_grid",
]
