"""FLOPs counted by torch's dispatcher (matmuls, convolutions, attention): one forward pass of a
backbone (`count_flops`, the inference FLOPs extraction stores), or any code run under
`flop_counter()` (pretraining counts each step's forward and backward with it)."""

from __future__ import annotations

import copy

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from vidcache.models.backbone import Backbone


def _cpu_flash_attention_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_flash_attention_backward_flop(grad_out_shape, query_shape, key_shape, value_shape, *args,
                                       out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


# torch counts the CUDA attention kernels (forward and backward) but not the fused CPU ones, so
# attention would vanish from CPU counts; registering them keeps FLOPs independent of the device
# they were counted on.
_EXTRA_FORMULAS = {}
for _name, _formula in (("_scaled_dot_product_flash_attention_for_cpu", _cpu_flash_attention_flop),
                        ("_scaled_dot_product_flash_attention_for_cpu_backward", _cpu_flash_attention_backward_flop)):
    if hasattr(torch.ops.aten, _name):
        _EXTRA_FORMULAS[getattr(torch.ops.aten, _name)] = _formula


def flop_counter() -> FlopCounterMode:
    """A counter of the FLOPs of whatever runs inside it (`with counter: ...; counter.get_total_flops()`).

    The one rule of every FLOPs figure vidcache records: multiply and add counted separately, only
    ops torch has a formula for (matmul, conv, attention, and their backward), on any device.
    """
    return FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS)


def count_flops(backbone: Backbone, clip_shape: tuple[int, int, int, int, int] | None = None) -> int:
    """FLOPs (multiply and add counted separately) for `pool(forward_features(clip))`.

    `clip_shape` defaults to one clip of the backbone's own input size, `(1, 3, T, S, S)`. Only ops
    torch has a formula for are counted (matmul, conv, attention); norms and activations are not,
    which is the usual convention for model FLOPs.
    """
    if clip_shape is None:
        clip_shape = (1, 3, backbone.num_frames, backbone.image_size, backbone.image_size)
    p = next(backbone.parameters(), None)
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    # On the meta device the count needs no arithmetic: a ViT-B clip on a CPU would otherwise cost
    # a few seconds at every store creation. Models with ops that have no meta kernel (some hub
    # models, scripted modules) are counted with a real forward pass instead.
    try:
        meta = copy.deepcopy(backbone).to("meta")
        return _count(meta, torch.zeros(clip_shape, device="meta", dtype=dtype))
    except Exception:
        device = p.device if p is not None else torch.device("cpu")
        return _count(backbone, torch.zeros(clip_shape, device=device, dtype=dtype))


def _count(backbone: Backbone, clip: torch.Tensor) -> int:
    counter = flop_counter()
    with torch.no_grad(), counter:
        backbone.pool(backbone.forward_features(clip))
    return int(counter.get_total_flops())
