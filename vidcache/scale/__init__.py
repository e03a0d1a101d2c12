"""vidcache.scale: SCALE clip-set aggregation on cached clip embeddings (thesis ch. 4).

`train_from_store` trains the predictor with masked clip modelling + SET contrastive losses;
`evaluate_run` reports Linear / MLP / kNN / Transformer / SCALE_linear / SCALE_kNN / SCALE_ft.
"""

from vidcache.scale.config import ScaleConfig
from vidcache.scale.data import ClipSets, sample_sets
from vidcache.scale.losses import contrastive_loss, info_nce, mcm_loss, pretext_loss, symmetric_info_nce
from vidcache.scale.model import SCALEModel, SCALEPredictor
from vidcache.scale.train import load_run, train_from_store, train_scale

__all__ = [
    "ClipSets", "SCALEModel", "SCALEPredictor", "ScaleConfig", "contrastive_loss", "info_nce", "load_run",
    "mcm_loss", "pretext_loss", "sample_sets", "symmetric_info_nce", "train_from_store", "train_scale",
]
