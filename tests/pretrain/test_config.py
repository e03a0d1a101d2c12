"""Pretraining configs: the run fields every objective shares (`RunConfig`), each CLI's defaults kept."""

import dataclasses

import pytest

from vidcache.config import check, problems_of
from vidcache.errors import ConfigError
from vidcache.pretrain import PretrainConfig, RunConfig, TDVConfig

RUN_FIELDS = ["codes", "out", "split", "loader", "dtype", "device", "workers", "checkpoint_every", "log_every",
              "stop_at", "resume"]


def test_both_objectives_take_the_run_fields_from_one_base():
    assert [f.name for f in dataclasses.fields(RunConfig)] == RUN_FIELDS
    base = {f.name: f for f in dataclasses.fields(RunConfig)}
    for cls in (PretrainConfig, TDVConfig):
        assert issubclass(cls, RunConfig)
        mine = {f.name: f for f in dataclasses.fields(cls)}
        for name in RUN_FIELDS:  # same type, help and hashing: one option text for both commands
            assert (mine[name].type, dict(mine[name].metadata)) == (base[name].type, dict(base[name].metadata)), name
    # Each CLI keeps its defaults: TDV checkpoints every 100 steps, V-JEPA every 500.
    assert PretrainConfig().checkpoint_every == 500 and TDVConfig().checkpoint_every == 100
    assert {n: getattr(TDVConfig(), n) for n in RUN_FIELDS if n != "checkpoint_every"} == \
        {n: getattr(PretrainConfig(), n) for n in RUN_FIELDS if n != "checkpoint_every"}


@pytest.mark.parametrize("cls", [PretrainConfig, TDVConfig])
def test_run_field_problems_are_reported_alike_with_the_objectives_own(cls):
    bad = dict(codes="", out="", loader="webm", dtype="fp8", workers=-1, checkpoint_every=0, log_every=0, stop_at=0)
    with pytest.raises(ConfigError) as err:
        check(cls(**bad, batch_size=0))
    assert err.value.problems == [
        "codes is required (a code store from `vidcache extract codes`)",
        "out is required (the run directory)",
        "checkpoint_every must be >= 1, got 0",
        "log_every must be >= 1, got 0",
        "loader must be one of codes, mp4, got 'webm'",
        "dtype must be one of auto, fp32, bf16, got 'fp8'",
        "workers must be >= 0, got -1",
        "stop_at must be >= 1 (or unset), got 0",
        "batch_size must be >= 1, got 0",  # the objective's own problems follow
    ]
    assert problems_of(cls(codes="c", out="o")) == []  # the defaults are valid once the paths are given
