"""vidcache.scale: SCALE clip-set aggregation on cached clip embeddings (thesis ch. 4).

`train_from_store` trains the predictor with masked clip modelling + SET contrastive losses;
`evaluate_run` reports Linear / MLP / kNN / Transformer / SCALE_linear / SCALE_kNN / SCALE_ft.
"""

from vidcache._lazy import exports

__getattr__, __dir__, __all__ = exports(__name__, {
    "vidcache.scale.config": ["ScaleConfig"],
    "vidcache.scale.data": ["ClipSets", "sample_sets"],
    "vidcache.scale.losses": ["contrastive_loss", "info_nce", "mcm_loss", "pretext_loss", "symmetric_info_nce"],
    "vidcache.scale.model": ["SCALEModel", "SCALEPredictor"],
    "vidcache.scale.train": ["load_run", "train_from_store", "train_scale"],
})
