"""vidcache.probe: linear, attentive, kNN and MLP probes on cached features.

All trained probes share one loop (`train_grid`): a grid of heads over lr x wd trained in one pass,
selected on val, reported on test.
"""

from vidcache._lazy import exports

__getattr__, __dir__, __all__ = exports(__name__, {
    "vidcache.probe.attentive": ["AttentiveClassifier", "AttentiveHead", "AttentiveProbe"],
    "vidcache.probe.data": ["ProbeData", "check_finite", "load_split", "subsample"],
    "vidcache.probe.config": ["AttentiveConfig", "KNNConfig", "LinearConfig", "MLPConfig", "ProbeConfig", "TrainConfig"],
    "vidcache.probe.knn": ["KNNProbe", "knn_scores"],
    "vidcache.probe.linear": ["LinearHead", "LinearProbe"],
    "vidcache.probe.metrics": ["classification_metrics"],
    "vidcache.probe.mlp": ["MLPHead", "MLPProbe"],
    "vidcache.probe.run": ["PROBES", "make_config", "run_probe"],
    "vidcache.probe.train": ["GridResult", "train_grid"],
})
