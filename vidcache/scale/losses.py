"""SCALE's losses: the official code's (default) and the thesis' equations (`loss_form`).

Official (github.com/Separius/SCALE `src/scale.py`: `Scale.forward`, `Scale.contrastive_loss`; the
weighting in `src/train.py`). With p_n the l2-normalised MCM prediction of clip n and t_n the
l2-normalised target-head output of clip feature x_n, n running over every clip of both sets of
every video in the batch (N = 2 B K), and M the masked clips:

    L_MCM = mean_{n in M} -log softmax_m(p_n . t_m / τ)[n]                  one direction
    L_SET = mean_b 0.5 (-log softmax_c(s1_b . s2_c / τ)[b] - log softmax_c(s1_c . s2_b / τ)[b])
    L     = (L_SET + L_MCM) / 2

s1_b, s2_b: the shared SET head's normalised outputs for the CLS tokens of video b's two sets.

Thesis. Notation: A = {a^i}, B = {b^i} are paired sets of N vectors, already projected by their MLP heads
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

Where they differ: the thesis scores each masked clip in both directions against one set's clips and
sums over clips; the official code scores one direction against both sets, averages over masked clips,
halves the symmetric SET loss and halves the total, so MCM carries about two thirds of the loss there
against nearly nine tenths in the thesis form.
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
    if rows.numel() == 0:
        return a.new_zeros(())
    return ((a[rows] @ b.T).argmax(1) == rows).float().mean()


def official_set_loss(s1: Tensor, s2: Tensor, temperature: float) -> Tensor:
    """L_SET of the official code: the symmetric InfoNCE of the two sets' SET outputs [B, d], x 0.5."""
    logits = s1 @ s2.T / temperature
    idx = torch.arange(len(s1), device=s1.device)
    rows = F.cross_entropy(logits.float(), idx, reduction="none")
    cols = F.cross_entropy(logits.float().T, idx, reduction="none")
    return (0.5 * (rows + cols)).mean()


def official_mcm_loss(pred: Tensor, target: Tensor, mask: Tensor, temperature: float) -> Tensor:
    """L_MCM of the official code: pred, target [N, d] normalised (every clip of both sets of every video),
    mask [N] bool; each masked prediction against every target, averaged over the masked clips.
    A batch without a masked clip gives 0 (the official code would give NaN)."""
    rows = mask.reshape(-1).nonzero().squeeze(1)
    if rows.numel() == 0:
        return pred.sum() * 0.0
    logits = pred[rows] @ target.T / temperature
    return F.cross_entropy(logits.float(), rows)


def pretext_loss(model, emb: Tensor, box: Tensor, mask: Tensor, temperature: float) -> dict[str, Tensor]:
    """The pretext loss of `model.loss_form` for a minibatch of two sets per video (see the module notes).

    emb [B, 2, K, D], box [B, 2, K, 6], mask [B, 2, K] bool (set 1 = index 0, set 2 = index 1);
    `model` is a SCALEModel. Both sets go through the predictor in one pass. Returns the loss and
    its parts, with the top-1 accuracies of both tasks (detached) for logging.
    """
    if getattr(model, "loss_form", "thesis") == "official":
        return official_pretext_loss(model, emb, box, mask, temperature)
    return thesis_pretext_loss(model, emb, box, mask, temperature)


def official_pretext_loss(model, emb: Tensor, box: Tensor, mask: Tensor, temperature: float) -> dict[str, Tensor]:
    """L = (L_SET + L_MCM) / 2 with the official heads (`mcm_pred`, `mcm_target` on x, one `set_head`)."""
    B, S, K, D = emb.shape
    clips, cls = model.predictor(emb.reshape(B * S, K, D), box.reshape(B * S, K, 6), mask.reshape(B * S, K))
    pred = F.normalize(model.mcm_pred(clips), dim=-1).reshape(B * S * K, -1)
    target = F.normalize(model.mcm_target(model.predictor.normalize(emb)), dim=-1).reshape(B * S * K, -1)
    sets = F.normalize(model.set_head(cls), dim=-1).view(B, S, -1)
    flat = mask.reshape(-1)
    l_mcm = official_mcm_loss(pred, target, flat, temperature)
    l_set = official_set_loss(sets[:, 0], sets[:, 1], temperature)
    with torch.no_grad():
        idx = torch.arange(B, device=emb.device)
        mcm_acc = _top1(pred, target, flat.nonzero().squeeze(1))
        set_acc = 0.5 * (_top1(sets[:, 0], sets[:, 1], idx) + _top1(sets[:, 1], sets[:, 0], idx))
    return {"loss": 0.5 * (l_set + l_mcm), "mcm": l_mcm.detach(), "set": l_set.detach(),
            "mcm_acc": mcm_acc, "set_acc": set_acc}


def thesis_pretext_loss(model, emb: Tensor, box: Tensor, mask: Tensor, temperature: float) -> dict[str, Tensor]:
    """L = L_MCM + L_SET for a minibatch of two sets per video (eqs. 4.6-4.8, four heads).

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
