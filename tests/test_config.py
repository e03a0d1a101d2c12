"""The shared config base: wrongly typed fields are problems like any other, reported together."""

from dataclasses import dataclass

import pytest

from vidcache.config import check, field, from_dict, problems_of, type_problems
from vidcache.errors import ConfigError


@dataclass
class Example:
    epochs: int = field(10, help="")
    lr: float = field(0.1, help="")
    name: str = field("a", help="")
    flag: bool = field(False, help="")
    lrs: list = field(default_factory=lambda: [1e-3, 1e-2], help="")
    ks: list = field(default_factory=lambda: [10, 20], help="")
    betas: tuple[float, float] = field((0.9, 0.999), help="")
    scales: tuple[float, ...] = field((0.15, 0.7), help="")
    names: list[str] = field(default_factory=lambda: ["x"], help="")
    stop_at: int | None = field(None, help="")
    options: dict = field(default_factory=dict, help="")

    def validate(self):
        p = []
        if self.epochs < 1:  # would raise TypeError on text
            p.append(f"epochs must be >= 1, got {self.epochs}")
        if any(v <= 0 for v in self.lrs):
            p.append(f"lrs must be positive, got {self.lrs}")
        return p


def test_well_typed_values_pass():
    assert problems_of(Example()) == []
    # ints are numbers; tuples and lists are interchangeable; None where allowed.
    assert problems_of(Example(lr=1, lrs=(1, 2), betas=[0.5, 0.6], stop_at=5, scales=(0.1,))) == []


@pytest.mark.parametrize("kwargs, message", [
    ({"epochs": "20"}, "epochs must be an integer, got '20'"),
    ({"epochs": 2.5}, "epochs must be an integer, got 2.5"),
    ({"epochs": True}, "epochs must be an integer, got True"),
    ({"lr": "abc"}, "lr must be a number, got 'abc'"),
    ({"name": 3}, "name must be text, got 3"),
    ({"flag": "yes"}, "flag must be true or false, got 'yes'"),
    ({"lrs": ["abc"]}, "lrs must be a list of numbers, got ['abc']"),
    ({"lrs": 0.1}, "lrs must be a list, got 0.1"),
    ({"ks": [1.5]}, "ks must be a list of integers, got [1.5]"),
    ({"betas": ("a", "b")}, "betas must be a list of numbers, got ('a', 'b')"),
    ({"betas": (0.9,)}, "betas must be a list of 2 values, got (0.9,)"),
    ({"scales": ("a",)}, "scales must be a list of numbers, got ('a',)"),
    ({"names": [1]}, "names must be a list of text values, got [1]"),
    ({"stop_at": "abc"}, "stop_at must be an integer or none, got 'abc'"),
    ({"options": "x"}, "options must be a table (JSON object), got 'x'"),
])
def test_wrong_kinds_are_one_problem_each(kwargs, message):
    assert type_problems(Example(**kwargs)) == [message]
    with pytest.raises(ConfigError) as e:
        check(Example(**kwargs), "example")
    assert str(e.value) == f"invalid example: {message}"


def test_every_problem_at_once_and_validate_never_trips_over_a_wrong_kind():
    # validate() would raise TypeError comparing '20' with 1; the type problem stands for it, and
    # validate's other problems are still reported.
    problems = problems_of(Example(epochs="20", lrs=[-1.0], lr="x"))
    assert problems == ["epochs must be an integer, got '20'", "lr must be a number, got 'x'",
                        "lrs must be positive, got [-1.0]"]
    with pytest.raises(ConfigError, match="epochs must be an integer.*lr must be a number"):
        from_dict(Example, {"epochs": "20", "lr": "x"})


def test_package_configs_type_check_their_fields():
    from vidcache.pretrain.train import PretrainConfig
    from vidcache.probe.linear import LinearConfig
    from vidcache.scale.evaluate import ScaleEvalConfig

    assert "stop_at must be an integer or none, got 'abc'" in type_problems(PretrainConfig(codes="x", out="y",
                                                                                         stop_at="abc"))
    assert type_problems(LinearConfig(betas=["a", "b"])) == ["betas must be a list of numbers, got ['a', 'b']"]
    with pytest.raises(ConfigError, match="ft_wds must be a list of numbers, got \\['x'\\]"):
        check(ScaleEvalConfig(ft_wds=["x"]))
