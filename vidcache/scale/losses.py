"""SCALE's losses, written after the thesis' equations (ch. 4.2).

Notation: A = {a^i}, B = {b^i} are paired sets of N vectors, already projected by their MLP heads
and l2-normalised (eq. 4.1).

    ℓ̃^i(A, B) = -log softmax_j(a^i · b^j / τ)[i]                      (eq. 4.2)
    ℓ^i(A, B)  = ℓ̃^i(A, B) + ℓ̃^i(B, A)                                  (eq. 4.3)
    L_ctr(A, B) = mean_i ℓ^i(A, B)                                      (eq. 4.4)
    L_MCM = Σ_{i ∈ M^1} ℓ^i(Ĉ^1, C^1) + Σ_{i ∈ M^2} ℓ^i(Ĉ^2, C^2)        (eq. 4.6)
    L_SET = L_ctr(CLS^1, CLS^2)                                         (eq. 4.7)
    L = L_MCM + L_SET                                                   (eq. 4.8)

How we read MCM. The paired sets Ĉ^j and C^j hold *every* clip of set j of *every* video in the
minibatch (N = batch x K): "all contrastive losses use the other videos in the minibatch as
negatives", and a masked prediction must be closer to its own clip "than to all other clips from
the same video and the rest of the minibatch" — the same video's other clips, masked or not, are
the hard negatives. Only the masked clips contribute terms (the sum runs over M^j). The target
C_i is "the original unmasked clip representation (after an MLP projection)": the clip's cached
embedding as the predictor receives it (standardised, projected to the hidden width by the
predictor's input projection), *without* its position encoding — adding P_i would let the
prediction find its target among the same video's clips from the box alone, since the masked
token carries P_i too — then the target head θ_B and l2 normalisation. The thesis writes every
equation for one video, so per-video sums are averaged over the minibatch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def info_nce(a: Tensor, b: Tensor, temperature: float, rows: Tensor | None = None) -> Tensor:
    """ℓ̃^i(A, B) for every i in `rows` (all by default): [len(rows)] per-element losses.

    a, b: [N, d] normalised; row i of `a` is paired with row i of `b`, all rows of `b` compete.
    """
    idx = torch.arange(a.shape[0], device=a.device) if rows is None else rows
    logits = a[idx] @ b.T / temperature
    return F.cross_entropy(logits.float(), idx, reduction="none")


def symmetric_info_nce(a: Tensor, b: Tensor, temperature: float, rows: Tensor | None = None) -> Tensor:
    """ℓ^i(A, B) = ℓ̃^i(A, B) + ℓ̃^i(B, A) for every i in `rows`: [len(rows)]."""
    return info_nce(a, b, temperature, rows) + info_nce(b, a, temperature, rows)


def contrastive_loss(a: Tensor, b: Tensor, temperature: float) -> Tensor:
    """L_ctr(A, B): mean of the symmetric per-element losses (a scalar)."""
    return symmetric_info_nce(a, b, temperature).mean()


def mcm_loss(pred: Tensor, target: Tensor, mask: Tensor, temperature: float) -> Tensor:
    """One set's MCM term, Σ_{i ∈ M} ℓ^i(Ĉ, C), averaged over the videos of the minibatch.

    pred, target: [B, K, d] normalised head outputs of Ĉ and C; mask: [B, K] bool.
    """
    B, K, d = pred.shape
    rows = mask.reshape(-1).nonzero().squeeze(1)
    return symmetric_info_nce(pred.reshape(B * K, d), target.reshape(B * K, d), temperature, rows).sum() / B


def _top1(a: Tensor, b: Tensor, rows: Tensor) -> Tensor:
    return ((a[rows] @ b.T).argmax(1) == rows).float().mean()


def pretext_loss(model, emb: Tensor, box: Tensor, mask: Tensor, temperature: float) -> dict[str, Tensor]:
    """L = L_MCM + L_SET for a minibatch of two sets per video.

    emb [B, 2, K, D], box [B, 2, K, 6], mask [B, 2, K] bool (set 1 = index 0, set 2 = index 1);
    `model` is a SCALEModel. Both sets go through the predictor in one pass. Returns the loss and
    its parts, with the top-1 accuracies of both tasks (detached) for logging.
    """
    B, S, K, D = emb.shape
    clips, cls = model.predictor(emb.reshape(B * S, K, D), box.reshape(B * S, K, 6), mask.reshape(B * S, K))
    pred = F.normalize(model.mcm_pred(clips), dim=-1).view(B, S, K, -1)
    target = F.normalize(model.mcm_target(model.predictor.embed(emb)), dim=-1)
    cls = cls.view(B, S, -1)
    set_a = F.normalize(model.set_a(cls[:, 0]), dim=-1)
    set_b = F.normalize(model.set_b(cls[:, 1]), dim=-1)

    l_mcm = sum(mcm_loss(pred[:, j], target[:, j], mask[:, j], temperature) for j in range(S))
    l_set = contrastive_loss(set_a, set_b, temperature)
    with torch.no_grad():
        rows = mask[:, 0].reshape(-1).nonzero().squeeze(1)
        mcm_acc = _top1(pred[:, 0].reshape(B * K, -1), target[:, 0].reshape(B * K, -1), rows)
        set_acc = _top1(set_a, set_b, torch.arange(B, device=emb.device))
    return {"loss": l_mcm + l_set, "mcm": l_mcm.detach(), "set": l_set.detach(),
            "mcm_acc": mcm_acc, "set_acc": set_acc}
