"""The evaluation plan: which checkpoints, on which datasets, with which probes.

A plan is a TOML file (see docs/example_plan.toml) or the same thing built from CLI flags
(`plan_from_flags`). It is validated whole before any work starts: every problem is reported at
once, each with the line of the TOML file it comes from, so a typo in the last probe does not
surface an hour into a run.

    [run]                         # optional: how the run executes (not part of any hash)
    device = "auto"               # or a list, one process per device: ["cuda:0", "cuda:1"]

    [[checkpoints]]
    path = "runs/vit_s/ckpt_*.pt" # a file or a glob; format auto-detected (vidcache / vjepa)
    [[checkpoints]]
    backbone = "tiny"             # any registry name
    options = { seed = 1 }

    [[datasets]]
    name = "synth"
    manifest = "corpus/manifest.csv"
    protocol = "uniform:4"

    [[probes]]
    type = "linear"
    epochs = 20
"""

from __future__ import annotations

import dataclasses
import glob
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidcache.config import check, field, problems_of, type_problems
from vidcache.errors import ConfigError

FORMATS = ("auto", "vidcache", "vjepa", "torchscript")
PROBE_TYPES = ("linear", "attentive", "knn", "mlp", "scale", "propagate", "retrieval", "linseg")
DENSE_TYPES = ("propagate", "retrieval", "linseg")  # read frame-token stores (protocol frames:..., tokens full)
SPLIT_KEYS = ("train_split", "val_split", "test_split")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass
class CheckpointSpec:
    """One `[[checkpoints]]` entry: files (path or glob) or a registry backbone name."""

    path: str = field("", help="checkpoint file or glob (e.g. runs/vit_s/ckpt_*.pt), relative to the plan")
    backbone: str = field("", help="a registry backbone name instead of a file (e.g. tiny, hf:..., timm:...)")
    format: str = field("auto", help="file format: auto (vidcache or vjepa, read from the file), vidcache, "
                                     "vjepa or torchscript")
    options: dict = field(default_factory=dict, help="keyword options of the backbone factory")
    name: str = field("", help="label of this run in tables and plots (default: the file's folder)")
    trust_checkpoint: bool = field(False, help="allow arbitrary pickles in these files (only if trusted)")

    def validate(self) -> list[str]:
        p = []
        if bool(self.path) == bool(self.backbone):
            p.append("give exactly one of path (a file or glob) or backbone (a registry name)")
        if self.format not in FORMATS:
            p.append(f"format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if not isinstance(self.options, dict):
            p.append(f"options must be a table of backbone options, got {self.options!r}")
        return p


@dataclass
class DatasetSpec:
    """One `[[datasets]]` entry: a manifest and how its videos are turned into clips."""

    name: str = field("", help="short name, used in store paths, tables and plots")
    manifest: str = field("", help="manifest CSV (path,label,split), relative to the plan")
    protocol: str = field("1x1", help="sampling protocol: 1x1, 5x3, 2x3, uniform:C, random:C:seed")
    tokens: str = field("none", help="patch tokens to store: none, full or pool:T,H,W (attentive probes need them)")
    train_split: str = field("train", help="split the probes train on")
    val_split: str = field("val", help="split that selects hyper-parameters (never test)")
    test_split: str = field("test", help="split the table reports")
    val_fraction: float = field(0.0, help="hold out this fraction of train as val when there is no val split")
    crop_fraction: float = field(1.0, help="evaluation crop side as a fraction of the short side")
    clip_len: int | None = field(None, help="frames per clip (default: each backbone's)")
    stride: int | None = field(None, help="frame stride (default: each backbone's)")
    dtype: str = field("fp32", help="compute dtype: fp32, fp16 (GPU) or bf16")

    def validate(self) -> list[str]:
        p = []
        if not self.name or not _NAME_RE.match(self.name):
            p.append(f"name must be a non-empty word of letters, digits, '_', '-' or '.', got {self.name!r}")
        if not self.manifest:
            p.append("manifest is required (a CSV with path,label,split columns)")
        return p


@dataclass
class ProbeSpec:
    """One `[[probes]]` entry: a probe type and its config overrides."""

    type: str = field("linear", help=f"one of {', '.join(PROBE_TYPES)}")
    name: str = field("", help="label in the table (default: the type); must be unique")
    config: dict = field(default_factory=dict, help="the probe's config fields (every other key of the table)")


@dataclass
class RunSpec:
    """`[run]`: how the run executes. None of it changes a result."""

    device: Any = field("auto", help="auto, cpu, cuda, cuda:N, or a list of devices (one process each)")
    workers: int = field(2, help="decode worker processes")
    batch_size: int = field(32, help="clips per forward pass")
    decode_timeout: float = field(300.0, help="seconds one video may take to decode")
    max_models_per_pass: int = field(8, help="checkpoints loaded together to share one decode pass")
    trust_checkpoint: bool = field(False, help="allow arbitrary pickles in every checkpoint of the plan")
    watch_patterns: list = field(default_factory=lambda: ["*.pt", "*.pth", "*.ckpt", "*.tar", "*.safetensors"],
                                 help="file patterns `eval watch` picks up")

    @property
    def devices(self) -> list[str]:
        return list(self.device) if isinstance(self.device, (list, tuple)) else [str(self.device)]

    def validate(self) -> list[str]:
        p = []
        for d in self.devices:
            if not (d in ("auto", "cpu", "cuda") or re.match(r"^cuda:\d+$", str(d))):
                p.append(f"device must be auto, cpu, cuda or cuda:N (or a list of them), got {d!r}")
        for name in ("workers",):
            if getattr(self, name) < 0:
                p.append(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("batch_size", "max_models_per_pass"):
            if getattr(self, name) < 1:
                p.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.decode_timeout <= 0:
            p.append(f"decode_timeout must be > 0, got {self.decode_timeout}")
        return p


@dataclass
class Plan:
    checkpoints: list[CheckpointSpec]
    datasets: list[DatasetSpec]
    probes: list[ProbeSpec]
    run: RunSpec = dataclasses.field(default_factory=RunSpec)
    source: str = ""  # the plan file, for messages

    def probe_config(self, probe: ProbeSpec, dataset: DatasetSpec) -> Any:
        """The probe's full config for a dataset: the dataset's split names, then the plan's overrides."""
        splits = {k: getattr(dataset, k) for k in SPLIT_KEYS}
        if probe.type == "scale":
            from vidcache.scale.config import ScaleConfig
            from vidcache.scale.evaluate import ScaleEvalConfig
            from vidcache.config import from_dict

            body = dict(probe.config)
            train = body.pop("train", {})
            ev = from_dict(ScaleEvalConfig, {**dataclasses.asdict(ScaleEvalConfig()), **splits,
                                             "val_fraction": dataset.val_fraction or 0.1, **body},
                           f"probe {probe.name} (scale eval)")
            tr = from_dict(ScaleConfig, {**dataclasses.asdict(ScaleConfig()), "split": dataset.train_split,
                                         **train}, f"probe {probe.name} (scale train)")
            return {"train": tr, "eval": ev}
        if probe.type in DENSE_TYPES:
            return dense_config(probe, dataset)
        from vidcache.probe.run import make_config

        return make_config(probe.type, **{**splits, "val_fraction": dataset.val_fraction, **probe.config})


def dense_config(probe: ProbeSpec, dataset: DatasetSpec) -> Any:
    """A dense probe's config: propagate evaluates the dataset's val split, retrieval builds its bank
    from train and evaluates val, linseg uses all three split names as the grid probes do."""
    from vidcache.config import from_dict

    if probe.type == "propagate":
        from vidcache.dense.propagate import PropagateConfig as cls

        base = {"split": dataset.val_split}
    elif probe.type == "retrieval":
        from vidcache.dense.retrieval import RetrievalConfig as cls

        base = {"train_split": dataset.train_split, "split": dataset.val_split}
    else:
        from vidcache.dense.linseg import LinsegConfig as cls

        base = {k: getattr(dataset, k) for k in SPLIT_KEYS}
    return from_dict(cls, {**dataclasses.asdict(cls()), **base, **probe.config}, f"probe {probe.name}")


# ---------------------------------------------------------------------------------------------
# TOML with line numbers

class _Lines:
    """Line of each `key =` inside each table of a TOML text (tomllib reports none for semantics).

    Tables are addressed like the parsed data: ("run",), ("checkpoints", 0), ("probes", 2).
    """

    def __init__(self, text: str):
        self.table: dict[tuple, int] = {}
        self.keys: dict[tuple, int] = {}
        counts: dict[str, int] = {}
        where: tuple = ()
        for n, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            m = re.match(r"^\[\[\s*([A-Za-z0-9_.-]+)\s*\]\]", line)
            if m:
                name = m.group(1)
                where = (name, counts.get(name, 0))
                counts[name] = counts.get(name, 0) + 1
                self.table[where] = n
                continue
            m = re.match(r"^\[\s*([A-Za-z0-9_.-]+)\s*\]", line)
            if m:
                where = tuple(m.group(1).split("."))
                self.table[where] = n
                continue
            m = re.match(r"^([A-Za-z0-9_-]+)\s*=", line)
            if m:
                self.keys.setdefault((*where, m.group(1)), n)

    def of(self, where: tuple, key: str | None = None) -> int | None:
        if key is not None and (*where, key) in self.keys:
            return self.keys[(*where, key)]
        return self.table.get(where)


def _problem(lines: _Lines | None, where: tuple, key: str | None, msg: str) -> str:
    label = ".".join(f"[{w}]" if isinstance(w, int) else str(w) for w in where).replace(".[", "[")
    label = f"{label}.{key}" if key else label
    n = lines.of(where, key) if lines is not None else None
    return f"line {n}: {label}: {msg}" if n else f"{label}: {msg}"


def _split_problem(msg: str, fields: list[str]) -> str | None:
    """The field a validate() message is about: its first word, else the first field it names."""
    word = re.split(r"[\s:]", msg, maxsplit=1)[0]
    if word in fields:
        return word
    hits = [(m.start(), f) for f in fields for m in [re.search(rf"\b{re.escape(f)}\b", msg)] if m]
    return min(hits)[1] if hits else None


def _build(cls: type, data: Any, where: tuple, lines: _Lines | None, problems: list[str],
           extra_ok: bool = False) -> Any:
    if not isinstance(data, dict):
        problems.append(_problem(lines, where, None, f"must be a table, got {type(data).__name__}"))
        return None
    names = [f.name for f in dataclasses.fields(cls)]
    known = {k: v for k, v in data.items() if k in names}
    if not extra_ok:
        for k in data:
            if k not in names:
                problems.append(_problem(lines, where, k, f"unknown key (known: {', '.join(names)})"))
    try:
        obj = cls(**known)
    except TypeError as e:
        problems.append(_problem(lines, where, None, str(e)))
        return None
    for msg in problems_of(obj):
        problems.append(_problem(lines, where, _split_problem(msg, names), msg))
    return obj


def parse_plan(data: dict, base: Path | None = None, lines: _Lines | None = None, source: str = "",
               need_checkpoints: bool = True) -> Plan:
    """A Plan from parsed TOML data; every problem is collected and raised as one ConfigError.

    `need_checkpoints=False` accepts a plan without `[[checkpoints]]` (`eval watch` takes its
    checkpoints from the folder it watches).
    """
    problems: list[str] = []
    allowed = {"run", "checkpoints", "datasets", "probes"}
    for k in data:
        if k not in allowed:
            problems.append(_problem(lines, (k,), None, f"unknown section (known: {', '.join(sorted(allowed))})"))
    run = _build(RunSpec, data.get("run", {}), ("run",), lines, problems) or RunSpec()

    def entries(section: str) -> list:
        value = data.get(section, [])
        if section == "checkpoints" and not need_checkpoints and section not in data:
            return []
        if not isinstance(value, list) or not value:
            problems.append(f"{section}: at least one [[{section}]] entry is needed")
            return []
        return value

    checkpoints = []
    for i, entry in enumerate(entries("checkpoints")):
        spec = _build(CheckpointSpec, entry, ("checkpoints", i), lines, problems)
        if spec is None:
            continue
        if spec.path:
            path = _resolve(spec.path, base)
            if not glob.has_magic(path) and not Path(path).exists():
                problems.append(_problem(lines, ("checkpoints", i), "path", f"no such file: {path}"))
            elif glob.has_magic(path) and not glob.glob(path) and not Path(path).parent.is_dir():
                problems.append(_problem(lines, ("checkpoints", i), "path",
                                         f"folder {Path(path).parent} does not exist"))
            spec.path = path
        elif spec.backbone:
            problems += [_problem(lines, ("checkpoints", i), "backbone", m) for m in _backbone_problems(spec)]
        checkpoints.append(spec)

    datasets = []
    for i, entry in enumerate(entries("datasets")):
        spec = _build(DatasetSpec, entry, ("datasets", i), lines, problems)
        if spec is None:
            continue
        if spec.manifest:
            spec.manifest = _resolve(spec.manifest, base)
            if not Path(spec.manifest).is_file():
                problems.append(_problem(lines, ("datasets", i), "manifest", f"no such file: {spec.manifest}"))
        problems += [_problem(lines, ("datasets", i), _split_problem(m, ["protocol", "tokens", "dtype",
                                                                           "crop_fraction", "clip_len", "stride"]), m)
                     for m in _extract_problems(spec)]
        datasets.append(spec)
    names = [d.name for d in datasets]
    for i, n in enumerate(names):
        if names.index(n) != i:
            problems.append(_problem(lines, ("datasets", i), "name", f"dataset name {n!r} is used twice"))

    probes = []
    for i, entry in enumerate(entries("probes")):
        where = ("probes", i)
        if not isinstance(entry, dict):
            problems.append(_problem(lines, where, None, "must be a table"))
            continue
        body = dict(entry)
        kind = body.pop("type", None)
        name = body.pop("name", "") or (kind or "")
        if kind not in PROBE_TYPES:
            problems.append(_problem(lines, where, "type", f"type must be one of {', '.join(PROBE_TYPES)}, "
                                                             f"got {kind!r}"))
            continue
        probe = ProbeSpec(type=kind, name=str(name), config=body)
        for msg in _probe_problems(probe, datasets, run):
            problems.append(_problem(lines, where, _split_problem(msg, list(body)), msg))
        if kind == "scale":
            problems += _scale_protocol_problems(probe, datasets, lines)
        if kind in DENSE_TYPES:
            for j, d in enumerate(datasets):
                if not (d.protocol.startswith("frames") and d.tokens == "full"):
                    problems.append(_problem(lines, ("datasets", j), "protocol",
                                             f"probe {name!r} ({kind}) reads per-frame patch tokens: set "
                                             f"protocol = \"frames:all\" and tokens = \"full\" for dataset {d.name!r}"))
        if kind == "attentive":
            for j, d in enumerate(datasets):
                if d.tokens == "none":
                    problems.append(_problem(lines, ("datasets", j), "tokens",
                                             f"probe {name!r} is attentive and needs patch tokens: set tokens = "
                                             f"\"pool:2,4,4\" (or \"full\") for dataset {d.name!r}"))
        probes.append(probe)
    pnames = [p.name for p in probes]
    for i, n in enumerate(pnames):
        if pnames.index(n) != i:
            problems.append(_problem(lines, ("probes", i), "name",
                                     f"probe name {n!r} is used twice; give each probe a distinct name"))
    if problems:
        raise ConfigError(problems, f"plan {source}".strip())
    return Plan(checkpoints, datasets, probes, run, source)


def _resolve(path: str, base: Path | None) -> str:
    p = Path(path).expanduser()
    return str(p if p.is_absolute() or base is None else base / p)


def _backbone_problems(spec: CheckpointSpec) -> list[str]:
    from vidcache.models.registry import backbone_problems

    return backbone_problems(spec.backbone)


def _extract_problems(spec: DatasetSpec) -> list[str]:
    from vidcache.extract.clips import ClipExtractConfig

    cfg = ClipExtractConfig(protocol=spec.protocol, tokens=spec.tokens, clip_len=spec.clip_len, stride=spec.stride,
                            crop_fraction=spec.crop_fraction, dtype=spec.dtype)
    return problems_of(cfg)


def _scale_protocol_problems(probe: ProbeSpec, datasets: list[DatasetSpec], lines: _Lines | None) -> list[str]:
    """A SCALE probe trains on sets of 2K distinct clips per video: every dataset's protocol must give them."""
    from vidcache.errors import VidcacheError
    from vidcache.extract.sampling import parse_protocol
    from vidcache.scale.config import ScaleConfig

    train = probe.config.get("train", {})
    k = train.get("clips_per_set", ScaleConfig().clips_per_set) if isinstance(train, dict) else None
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        return []  # reported with the probe's other config problems
    out = []
    for j, d in enumerate(datasets):
        try:
            clips = parse_protocol(d.protocol).num_clips
        except VidcacheError:
            continue  # reported as the dataset's protocol problem
        if clips < 2 * k:
            out.append(_problem(lines, ("datasets", j), "protocol",
                                f"probe {probe.name!r} is SCALE with clips_per_set = {k} and needs {2 * k} clips per "
                                f"video, but protocol {d.protocol!r} of dataset {d.name!r} gives {clips}: " + (
                                    f"use protocol = \"random:{max(2 * k, 16)}:0\" or lower the probe's "
                                    f"train.clips_per_set" if lines is not None else
                                    f"use --protocol random:{max(2 * k, 16)}:0")))
    return out


def _probe_problems(probe: ProbeSpec, datasets: list[DatasetSpec], run: RunSpec) -> list[str]:
    from vidcache.errors import VidcacheError

    if any(k in probe.config for k in SPLIT_KEYS):
        return [f"split names belong to the dataset ([[datasets]] {', '.join(SPLIT_KEYS)}), not the probe"]
    # A dataset whose own fields are mistyped is reported there, not again under every probe.
    ds = next((d for d in datasets if not type_problems(d)), DatasetSpec(name="x", manifest="x"))
    plan = Plan([], [], [], run)
    try:
        plan.probe_config(probe, ds)
    except ConfigError as e:
        return list(e.problems)
    except VidcacheError as e:
        return [str(e)]
    return []


def load_plan(path: str | Path, need_checkpoints: bool = True) -> Plan:
    """Read and validate a plan TOML file; relative paths in it are relative to the file.

    `need_checkpoints=False`: a plan of datasets and probes only is fine (see `parse_plan`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"no such plan file: {path}"], "plan")
    text = path.read_text()
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise ConfigError(["reading a TOML plan needs Python >= 3.11 or the tomli package "
                               "(pip install tomli)"], "plan") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{path}: not valid TOML: {e}"], "plan") from None
    return parse_plan(data, base=path.parent, lines=_Lines(text), source=str(path),
                      need_checkpoints=need_checkpoints)


def plan_from_flags(checkpoints: list[str], manifest: str, probes: list[str], *, dataset: str = "",
                    protocol: str = "1x1", tokens: str = "none", device: str = "auto", workers: int = 2,
                    batch_size: int = 32, trust_checkpoint: bool = False, val_fraction: float = 0.0,
                    test_split: str = "test") -> Plan:
    """The plan of `vidcache eval run --checkpoint A --checkpoint B --manifest M --probe linear,knn`.

    A checkpoint that names an existing file (or a glob) is a file, anything else a registry name.
    """
    entries = []
    for c in checkpoints:
        is_file = glob.has_magic(c) or Path(c).exists() or Path(c).suffix in (".pt", ".pth", ".ckpt", ".tar",
                                                                               ".safetensors")
        entries.append({"path": c} if is_file else {"backbone": c})
    names = [p.strip() for item in probes for p in item.split(",") if p.strip()]
    name = dataset or Path(manifest).resolve().parent.name or "dataset"
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    data = {"run": {"device": device, "workers": workers, "batch_size": batch_size,
                    "trust_checkpoint": trust_checkpoint},
            "checkpoints": entries,
            "datasets": [{"name": name, "manifest": manifest, "protocol": protocol, "tokens": tokens,
                          "val_fraction": val_fraction, "test_split": test_split}],
            "probes": [{"type": n} for n in names]}
    return parse_plan(data, base=None, source="(flags)")


def check_plan(plan: Plan) -> Plan:
    """Re-validate a Plan built in Python (parse_plan already validated those it returns)."""
    for c in plan.checkpoints:
        check(c, "checkpoint")
    for d in plan.datasets:
        check(d, "dataset")
    check(plan.run, "run")
    return plan
