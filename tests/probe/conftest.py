"""Fixtures of the probe tests: small synthetic Gaussian-cluster features."""

import numpy as np
import pytest

from vidcache.probe.data import ProbeData


def clusters(n, k=4, d=8, views=3, noise=1.0, seed=0, split="", means_seed=123, tokens=0):
    rng = np.random.default_rng(seed)
    mu = np.random.default_rng(means_seed).normal(size=(k, d)) * 2
    y = np.arange(n) % k
    shape = (n, views, tokens, d) if tokens else (n, views, d)
    centre = mu[y][:, None, None] if tokens else mu[y][:, None]
    x = centre + noise * rng.normal(size=shape)
    return ProbeData(x.astype(np.float32), y, split=split)


@pytest.fixture
def make_clusters():
    return clusters
