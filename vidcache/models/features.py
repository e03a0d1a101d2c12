"""Named clip features: what a clip store can hold beside the mean of the last layer's tokens.

| name             | value                                                            | dim       | needs CLS |
|------------------|------------------------------------------------------------------|-----------|-----------|
| `mean`           | mean of the last layer's tokens (`Backbone.pool`; `clips/emb`)   | D         | no        |
| `cls`            | CLS token of the last block, after the final norm                | D         | yes       |
| `cls+avgpool`    | `cls` with the mean of the last block's patch tokens             | 2D        | yes       |
| `lastN`          | CLS tokens of the last N blocks (normed), oldest first           | N*D       | yes       |
| `lastN+avgpool`  | `lastN` with the mean of the last block's patch tokens           | (N+1)*D   | yes       |

These are DINOv2's linear-evaluation inputs (`create_linear_input` in dinov2/eval/linear.py:
`n_last_blocks` 1 or 4, `avgpool` off or on; `lastN` is written `last4` for N = 4, `cls` is
`last1`), and DINO's kNN feature (`cls`, eval_knn.py). Per-frame image backbones give a clip's CLS
as the mean of its frames' CLS tokens, and its avgpool as the mean over all its frames' patch tokens.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

from vidcache.errors import ConfigError

_NAME = re.compile(r"^(mean|cls|cls\+avgpool|last([1-9][0-9]?)(\+avgpool)?)$")


def parse_feature(name: str) -> tuple[int, bool]:
    """(number of CLS blocks, with avgpool); (0, False) is `mean`. A bad name raises ConfigError."""
    m = _NAME.match(str(name))
    if not m:
        raise ConfigError([f"unknown feature {name!r}; features are mean, cls, cls+avgpool, lastN and "
                           f"lastN+avgpool (e.g. last4+avgpool)"], "features")
    if name == "mean":
        return 0, False
    if name.startswith("cls"):
        return 1, name.endswith("+avgpool")
    return int(m[2]), bool(m[3])


def feature_dim(name: str, embed_dim: int) -> int:
    blocks, avg = parse_feature(name)
    return embed_dim if blocks == 0 else embed_dim * (blocks + int(avg))


def feature_key(name: str) -> str:
    """The store array of a feature: `clips/emb` for mean, `clips/features/<name with + as _>` otherwise."""
    parse_feature(name)
    return "clips/emb" if name == "mean" else "clips/features/" + name.replace("+", "_")


def cls_blocks_needed(names) -> int:
    return max([parse_feature(n)[0] for n in names] or [0])


def compute_features(names, tokens: Tensor, pooled: Tensor, cls: Tensor | None) -> dict[str, Tensor]:
    """Every named feature [B, dim] from the last layer's patch tokens [B, L, D], the backbone's
    pooled embedding [B, D] and the CLS tokens of the last blocks [B, n, D] (None without CLS)."""
    out = {}
    for name in names:
        blocks, avg = parse_feature(name)
        if blocks == 0:
            out[name] = pooled
            continue
        if cls is None or cls.shape[1] < blocks:
            raise ConfigError([f"feature {name!r} needs the CLS tokens of the last {blocks} blocks"], "features")
        parts = [cls[:, -blocks:].flatten(1)]
        if avg:
            parts.append(tokens.mean(1))
        out[name] = torch.cat(parts, dim=-1)
    return out
