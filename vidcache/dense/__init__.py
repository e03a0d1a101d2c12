"""Dense evaluations on per-frame patch tokens (frame-token stores), one file per evaluation.

- `propagate`: semi-supervised video object segmentation by label propagation (DAVIS J&F);
- `retrieval`: Hummingbird dense nearest-neighbour retrieval (mIoU);
- `linseg`: linear segmentation heads on patch tokens (mIoU);
- `metrics`: the DAVIS-2017 J and F measures;
- `data`: a video's tokens and masks, read through the store API.
"""
