"""The FLOPs counter's rules: forward (inference) and forward + backward (training) golden values."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vidcache.models import count_flops, create_backbone
from vidcache.models.flops import flop_counter


def _train_flops(fn) -> int:
    counter = flop_counter()
    with counter:
        fn().sum().backward()
    return int(counter.get_total_flops())


def test_linear_backward_counts_the_gradients_it_computes():
    n, a, b = 5, 7, 3
    lin = nn.Linear(a, b)
    x = torch.randn(n, a)
    # Forward 2nab; backward: the weight's gradient (2nab), and the input's only when it needs one.
    assert _train_flops(lambda: lin(x)) == 2 * (2 * n * a * b)
    assert _train_flops(lambda: lin(x.requires_grad_())) == 3 * (2 * n * a * b)


@pytest.mark.parametrize("length", [16, 9])
def test_cpu_attention_backward_is_counted_as_on_cuda(length):
    B, H, L, d = 2, 4, length, 8
    q = torch.randn(B, H, L, d, requires_grad=True)
    forward = 2 * (2 * B * H * L * L * d)  # QK^T and AV
    # Backward: five products of the same size (QK^T recomputed, dV, dP, dQ, dK) = 2.5x forward.
    assert _train_flops(lambda: F.scaled_dot_product_attention(q, q, q)) == forward + 5 * (2 * B * H * L * L * d)


def test_training_step_of_tiny_matches_the_architecture():
    model = create_backbone("tiny").train()
    L, D, depth = 128, 96, 4
    patch = L * D * (3 * 4 * 8 * 8)  # multiply-adds, as in count_flops' test
    linear, attention = L * 12 * D * D, 2 * L * L * D
    x = torch.zeros(1, 3, 8, 64, 64)
    got = _train_flops(lambda: model.pool(model.forward_features(x)))
    # The input needs no gradient, so the patch embedding runs its weight gradient only (2x); the
    # blocks' linears 3x, their attention 3.5x.
    assert got == 2 * (2 * patch + depth * (3 * linear) + int(3.5 * depth * attention))
    assert count_flops(model) == 2 * (patch + depth * (linear + attention))
