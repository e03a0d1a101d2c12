"""The `vidcache` command line: parse, validate, call the library, show progress.

Every command is a thin wrapper over a library function (named in its docstring), so everything the
CLI does is callable from Python. Exit codes: 0 success, 2 usage error (bad option, missing file,
wrong store...; one line on stderr, no traceback), 3 finished but some videos failed.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import sys
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import typer

import vidcache
from vidcache.errors import VidcacheError

EXIT_USAGE, EXIT_FAILURES = 2, 3


class _Console:
    """A rich Console made on first use: importing rich's console is start-up time `--help` does not need."""

    def __init__(self, **options):
        self._options, self._console = options, None

    @property
    def real(self):
        """The Console itself, for rich objects that take one (Progress, RichHandler)."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return self._console

    def __getattr__(self, name):
        return getattr(self.real, name)


console = _Console(stderr=True, soft_wrap=True)
out = _Console(soft_wrap=True)


def _group(help: str, **options) -> typer.Typer:
    """A command group. Help is click's plain layout: typer's rich layout imports rich's markdown,
    syntax and traceback modules and renders panels, most of the start-up time of every `--help`."""
    return typer.Typer(help=help, no_args_is_help=True, rich_markup_mode=None, **options)


app = _group("Extract video features once, learn cheaply on the cache.", add_completion=False,
             pretty_exceptions_enable=False)
data_app = _group("Manifests, dataset importers and the synthetic corpus.")
extract_app = _group("Stage 1: videos -> clip stores (embeddings) and code stores (patch codes).")
codec_app = _group("k-means patch codec: train codebooks, evaluate code stores.")
cache_app = _group("Inspect, verify, export and prune stores.")
probe_app = _group("Stage 2: linear / attentive / kNN / MLP probes on a clip store.")
scale_app = _group("SCALE clip-set aggregation on cached clip embeddings.")
pretrain_app = _group("Encoder pretraining from code stores (V-JEPA).")
eval_app = _group("Batch re-evaluation of many checkpoints.")
for sub, name in [(data_app, "data"), (extract_app, "extract"), (codec_app, "codec"), (cache_app, "cache"),
                  (probe_app, "probe"), (scale_app, "scale"), (pretrain_app, "pretrain"), (eval_app, "eval")]:
    app.add_typer(sub, name=name)


def _version(value: bool) -> None:
    if value:
        print(f"vidcache {vidcache.__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """vidcache: extract once (GPU when there is one), then probe, aggregate and re-evaluate on the cache."""


# ----------------------------------------------------------------------------------------------- helpers
def progress_columns() -> list:
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("ETA"), TimeRemainingColumn()]


@contextlib.contextmanager
def progress_bar(description: str, total: int | None = None, unit: str = "videos") -> Iterator[Callable]:
    """vidcache.progress.progress_bar on the CLI's console, drawn on a terminal (or VIDCACHE_PROGRESS=1)."""
    from vidcache.progress import progress_bar as bar

    with bar(description, total, console=console.real,
             disable=not console.is_terminal and not _force_progress()) as update:
        yield update


def _force_progress() -> bool:
    import os

    return os.environ.get("VIDCACHE_PROGRESS", "") == "1"


def _exists(path: Path, what: str) -> Path:
    if not Path(path).exists():
        raise typer.BadParameter(f"{what} not found: {path}")
    return Path(path)


STORAGE_HELP = ("fsspec option for remote stores and videos (s3://...), KEY=VALUE (JSON or plain value), "
                "e.g. endpoint_url=http://127.0.0.1:9000; repeatable. Credentials also come from the "
                "environment (AWS_*) and ~/.aws; none is ever printed or saved")


def _storage_option_param() -> inspect.Parameter:
    return _param("storage_option", List[str], typer.Option([], "--storage-option", help=STORAGE_HELP))


def _use_storage_options(items: List[str], *urls) -> None:
    """Apply --storage-option KEY=VALUE to the fsspec protocols of `urls` (stores, videos)."""
    from vidcache.cache.store import use_storage_options

    use_storage_options(_parse_options(items, "storage option"), [str(u) for u in urls])


def _print_json(obj) -> None:
    out.print_json(json.dumps(obj, default=str))


_OPTIONAL_SCALARS = {"int | None": int, "float | None": float, "str | None": str,
                     "Optional[int]": int, "Optional[float]": float, "Optional[str]": str}


def config_command(sub: typer.Typer, name: str, config_cls: type, run: Callable, *, params: list, help: str,
                   skip: tuple = ()) -> None:
    """Register a command whose options are the fields of a config dataclass.

    Each field becomes `--field-name` with the field's default and help text (lists as comma lists,
    booleans as --x/--no-x, `int | None` fields as optional numbers, other fields as JSON), so a
    config gains a CLI option the day it gains a field. `params` are the command's own arguments
    (typer Parameters); `run(cfg_kwargs, **own)` does the work (and gets the click context as `ctx`
    when it takes one). Only the config class is needed here, so config modules stay free of torch
    and `--help` starts at once.
    """
    import dataclasses

    fields = {f.name: f for f in dataclasses.fields(config_cls) if f.name not in skip}
    options, kinds = [], {}
    for f in fields.values():
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        flag = "--" + f.name.replace("_", "-")
        text = f.metadata.get("help", "")
        if isinstance(default, bool):
            kind, ann, opt = "plain", bool, typer.Option(default, f"{flag}/--no-{f.name.replace('_', '-')}", help=text)
        elif isinstance(default, (list, tuple)):
            kind, ann, opt = "list", str, typer.Option(",".join(map(str, default)), flag, help=f"{text} (comma list)")
        elif isinstance(default, (int, float, str)):
            kind, ann, opt = "plain", type(default), typer.Option(default, flag, help=text)
        elif default is None and str(f.type) in _OPTIONAL_SCALARS:
            kind, ann, opt = "plain", Optional[_OPTIONAL_SCALARS[str(f.type)]], typer.Option(None, flag, help=text)
        else:  # a dict, or None of another type: given as JSON or a plain string
            kind, ann, opt = "json", Optional[str], typer.Option(None, flag, help=f"{text} (JSON)")
        kinds[f.name] = (kind, default)
        options.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=ann))
    wants_ctx = "ctx" in inspect.signature(run).parameters

    def command(ctx: typer.Context, **kwargs):
        own = {p.name: kwargs.pop(p.name) for p in params}
        if wants_ctx:
            own["ctx"] = ctx
        cfg = {}
        for key, value in kwargs.items():
            # Options left at their defaults stay out, so a preset's values can fill them; the
            # config class gives every field it lacks the same default.
            if _is_default(ctx, key) or value is None:
                continue
            kind, default = kinds[key]
            if kind == "list" and isinstance(value, str):
                value = type(default)(_parse_value(v) for v in value.split(",") if v.strip())
            elif kind == "json":
                value = _parse_value(value)
            cfg[key] = value
        run(cfg, **own)

    ctx_param = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
    command.__signature__ = inspect.Signature([ctx_param] + params + options)
    command.__doc__ = help
    command.__name__ = name.replace("-", "_")
    sub.command(name)(command)


def _is_default(ctx, name: str) -> bool:
    """Whether option `name` was left at its default (not given on the command line or by env)."""
    src = ctx.get_parameter_source(name) if ctx is not None else None
    return src is not None and getattr(src, "name", "") == "DEFAULT"


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text.strip()


def _param(name: str, annotation, default) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


# ----------------------------------------------------------------------------------------------- data
def _register_synth() -> None:
    from vidcache.data.config import SynthConfig

    def synth(cfg: dict, out_dir: Path, workers: int, overwrite: bool) -> None:
        from vidcache.config import from_dict
        from vidcache.data.synth import synthesize

        config = from_dict(SynthConfig, cfg, "synth config")
        with progress_bar("synthesising", config.videos) as update:
            manifest = synthesize(out_dir, config, progress=lambda d, t: update(d, t), overwrite=overwrite,
                                  workers=workers)
        out.print(f"wrote {len(manifest)} videos in {len(manifest.classes)} classes to {out_dir} "
                  f"(splits: {manifest.counts()}); manifest: {Path(out_dir) / 'manifest.csv'}")

    config_command(data_app, "synth", SynthConfig, synth, params=[
        _param("out_dir", Path, typer.Argument(..., help="folder to write videos/, manifest.csv, classes.txt")),
        _param("workers", int, typer.Option(1, help="processes writing videos (same bytes for any count)")),
        _param("overwrite", bool, typer.Option(False, help="replace an earlier synthetic corpus in OUT_DIR")),
    ], help="Write the synthetic corpus (real H.264 mp4s): motion classes no single frame separates, and "
            "appearance classes one frame does. Library: `vidcache.data.synth.synthesize`.")


_register_synth()


def _or(names: list[str], word: str = "or") -> str:
    return ", ".join(names[:-1]) + f" {word} {names[-1]}" if len(names) > 1 else "".join(names)


def _register_manifest() -> None:
    """`data manifest`: the formats, and which options each reads, come from the importers' registry
    (`vidcache.data.config.IMPORTERS`); the command itself knows no format."""
    from vidcache.data.config import IMPORTERS, readers

    def by(option: str) -> str:
        return f"read by --format {_or(readers(option))}"

    formats = "; ".join(f"{name}: {imp.about}" for name, imp in IMPORTERS.items())

    @data_app.command("manifest")
    def data_manifest(ctx: typer.Context,
                      root: Path = typer.Argument(..., help="dataset root (videos)"),
                      output: Path = typer.Option(..., "-o", "--output", help="manifest CSV to write"),
                      format: str = typer.Option("folders", help=f"importer ({formats})"),
                      splits: List[Path] = typer.Option([], help=f"split files: a folder or CSVs, repeatable "
                                                                 f"({by('splits')})"),
                      labels_json: Optional[Path] = typer.Option(None, help=f"labels.json ({by('labels_json')})"),
                      train_json: Optional[Path] = typer.Option(None, help=f"train.json ({by('train_json')})"),
                      val_json: Optional[Path] = typer.Option(None, help=f"validation.json ({by('val_json')})"),
                      test_json: Optional[Path] = typer.Option(None, help=f"test json, optional ({by('test_json')})"),
                      official_val_as: str = typer.Option("test", help="report the official validation set as test "
                                                                       f"(papers' practice) or val "
                                                                       f"({by('official_val_as')})"),
                      split_name: Optional[str] = typer.Option(None, help=f"one split for every row "
                                                                          f"({by('split_name')})"),
                      fold: int = typer.Option(1, help=f"official split fold, 1-3 ({by('fold')})"),
                      val_fraction: float = typer.Option(0.1, help="fraction carved out as val where the dataset "
                                                                   f"has no val split ({by('val_fraction')})"),
                      test_fraction: float = typer.Option(0.1, help=f"fraction for test ({by('test_fraction')})"),
                      seed: int = typer.Option(0, help=f"seed of random splits ({by('seed')})")) -> None:
        """Write a `path,label,split` manifest from a folder-per-class tree or official split files.
        Library: `vidcache.data.importers.import_manifest`."""
        from vidcache.data.config import unknown_format

        given = {k: v for k, v in ctx.params.items() if k not in ("root", "output", "format")}
        imp = IMPORTERS.get(format)
        if imp is None:
            raise typer.BadParameter(unknown_format(format))
        for option, value in given.items():
            if option not in imp.options.values() and value not in (None, []) and not _is_default(ctx, option):
                raise typer.BadParameter(f"--{option.replace('_', '-')} is {by(option)}, not {format}")
        missing = [f"--{o.replace('_', '-')}" for o in imp.needs if given[o] in (None, [])]
        if missing:
            raise typer.BadParameter(f"--format {format} needs {_or(missing, 'and')}")
        if imp.splits == "one" and len(splits) > 1:
            raise typer.BadParameter(f"--format {format} takes one --splits folder, got {len(splits)}")
        _exists(root, "dataset root")
        kwargs = {arg: given[option] for arg, option in imp.options.items()}
        if "splits" in imp.options.values():
            arg = next(a for a, o in imp.options.items() if o == "splits")
            kwargs[arg] = splits[0] if imp.splits == "one" else list(splits)
        from vidcache.data.importers import import_manifest

        m = import_manifest(format, root, **kwargs)
        m.write(output)
        out.print(f"wrote {output}: {len(m)} videos, {len(m.classes)} classes, splits {m.counts()}")


_register_manifest()


# ----------------------------------------------------------------------------------------------- extract
def _register_extract_clips() -> None:
    from vidcache.extract.config import ClipExtractConfig

    def clips(cfg: dict, ctx, manifest: Path, output: List[str], backbone: List[str], backbone_option: List[str],
              overwrite: bool, storage_option: List[str]) -> None:
        import time

        from vidcache.config import from_dict
        from vidcache.data.manifest import read_manifest
        from vidcache.extract.clips import extract_clips, extract_clips_many

        if len(output) != len(backbone):
            raise typer.BadParameter(f"give one -o/--output per --backbone ({len(backbone)} backbones, "
                                     f"{len(output)} outputs)")
        values = {**cfg, "backbone": backbone[0]}
        if cfg.get("preset"):
            from vidcache.extract.clips import apply_preset

            given = {k: v for k, v in values.items() if k != "backbone" or not _is_default(ctx, "backbone")}
            values = {**values, **apply_preset(given, cfg["preset"])}
        config = from_dict(ClipExtractConfig, {**values, "backbone_options": _parse_options(backbone_option)},
                           "extract config")
        m = read_manifest(manifest)
        _use_storage_options(storage_option, *output, *m.paths)
        t0 = time.perf_counter()
        with progress_bar(f"extracting {', '.join(backbone)}", len(m)) as update:
            def on_progress(done: int, total: int, n_clips: int) -> None:
                dt = max(time.perf_counter() - t0, 1e-9)
                update(done, total, rate=f"{done / dt:.1f} videos/s {n_clips / dt:.0f} clips/s")

            if len(backbone) == 1:
                summaries = [extract_clips(m, output[0], config, overwrite=overwrite, progress=on_progress)]
            else:
                summaries = extract_clips_many(m, list(output), config, list(backbone), overwrite=overwrite,
                                               progress=on_progress)
        failed = False
        for summary in summaries:
            try:
                _report_extraction(summary)
            except typer.Exit:
                failed = True
        if failed:
            raise typer.Exit(EXIT_FAILURES)

    config_command(extract_app, "clips", ClipExtractConfig, clips, skip=("backbone", "backbone_options"), params=[
        _param("manifest", Path, typer.Argument(..., help="manifest CSV (path,label,split)")),
        _param("output", List[str], typer.Option(..., "-o", "--output", help="clip store to write (path or fsspec "
                                                                            "URL); one per --backbone")),
        _param("backbone", List[str], typer.Option(["tiny"], help="backbone name or prefix:arg (`vidcache extract "
                                                                  "backbones`); repeat it to extract several "
                                                                  "backbones from one decode pass")),
        _param("backbone_option", List[str], typer.Option([], help="backbone factory option KEY=VALUE "
                                                                   "(repeatable)")),
        _param("overwrite", bool, typer.Option(False, help="replace a store made with another config")),
        _storage_option_param(),
    ], help="Decode videos once, run a frozen backbone, write clip embeddings + boxes to a clip store. "
            "Resumes by default; under torchrun every rank takes its own blocks. With --preset (vjepa-k400, "
            "vjepa-ssv2, vjepa2-k400, vjepa2-ssv2, dino-knn, dinov2-linear; docs/protocols.md) the options "
            "given here override the preset's values. Library: `vidcache.extract.clips.extract_clips`.")


_register_extract_clips()


def _parse_options(items: List[str], what: str = "backbone option") -> dict:
    opts = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{what} {item!r} must look like KEY=VALUE")
        try:
            opts[key] = json.loads(value)
        except json.JSONDecodeError:
            opts[key] = value
    return opts


def _report_extraction(summary) -> None:
    c = summary.counts
    out.print(f"{summary.url}: {c['done']} done, {c['failed']} failed, {c['pending']} pending "
              f"({summary.videos} videos this run in {summary.seconds:.1f} s, {summary.videos_per_s:.1f} videos/s)")
    if summary.failures:
        for f in summary.failures[:10]:
            console.print(f"  failed: {f['path']}: {f['error']}", markup=False, highlight=False)
        if len(summary.failures) > 10:
            console.print(f"  ... and {len(summary.failures) - 10} more (see `vidcache cache info`)")
        raise typer.Exit(EXIT_FAILURES)


def _register_extract_codes() -> None:
    from vidcache.extract.config import CodeExtractConfig

    def codes(cfg: dict, manifest: Path, output: str, overwrite: bool, storage_option: List[str]) -> None:
        import time

        from vidcache.config import from_dict
        from vidcache.data.manifest import read_manifest
        from vidcache.extract.codes import extract_codes

        config = from_dict(CodeExtractConfig, cfg, "extract codes config")
        _exists(Path(config.codebook), "codebook")
        m = read_manifest(manifest)
        _use_storage_options(storage_option, output, *m.paths)
        t0 = time.perf_counter()
        with progress_bar("encoding codes", len(m)) as update:
            summary = extract_codes(m, output, config, overwrite=overwrite, progress=lambda d, n, c: update(
                d, n, rate=f"{d / max(time.perf_counter() - t0, 1e-9):.1f} videos/s"))
        _report_extraction(summary)

    config_command(extract_app, "codes", CodeExtractConfig, codes, params=[
        _param("manifest", Path, typer.Argument(..., help="manifest CSV (path,label,split)")),
        _param("output", str, typer.Option(..., "-o", "--output", help="code store to write (path or fsspec URL)")),
        _param("overwrite", bool, typer.Option(False, help="replace a store made with another config")),
        _storage_option_param(),
    ], help="Quantize frames into k-means patch codes (uint16; uint8 when K <= 256) in a code store. "
            "Resumable and torchrun-aware like `extract clips`. Library: `vidcache.extract.codes.extract_codes`.")


_register_extract_codes()


@extract_app.command("backbones")
def extract_backbones(pattern: str = typer.Argument("*", help="glob over registered names")) -> None:
    """List registered backbones and prefixes. Library: `vidcache.models.list_backbones`."""
    from vidcache.models import list_backbones, list_prefixes

    for name in list_backbones(pattern):
        out.print(name)
    for usage in list_prefixes():
        out.print(usage)


# ----------------------------------------------------------------------------------------------- codec
def _register_codec_train() -> None:
    from vidcache.codec.config import CodecConfig

    def train(cfg: dict, manifest: Path, output: Path, decoder: str) -> None:
        from vidcache.codec import train_codebook
        from vidcache.config import from_dict
        from vidcache.data.manifest import read_manifest

        config = from_dict(CodecConfig, cfg, "codec config")
        cb = train_codebook(read_manifest(manifest), config, backend=decoder, progress=True)
        cb.save(output)
        out.print(f"wrote {output}: {cb!r}")

    config_command(codec_app, "train", CodecConfig, train, params=[
        _param("manifest", Path, typer.Argument(..., help="manifest CSV; frames come from --split")),
        _param("output", Path, typer.Option(..., "-o", "--output", help="codebook file to write (.npz)")),
        _param("decoder", str, typer.Option("auto", help="auto (torchcodec, else decord; PyAV fallback), "
                                                         "torchcodec, decord or pyav")),
    ], help="Train a k-means patch codebook with faiss (ViDROP-style; all GPUs when faiss sees some). "
            "Library: `vidcache.codec.train_codebook`.")


_register_codec_train()


@codec_app.command("eval")
def codec_eval(store: str = typer.Argument(..., help="code store from `vidcache extract codes`"),
               split: str = typer.Option("test", help="split to evaluate (not the codebook's training split)"),
               preview: Optional[Path] = typer.Option(None, help="PNG: original | reconstruction | |error|"),
               max_videos: Optional[int] = typer.Option(None, help="evaluate at most this many videos"),
               decoder: str = typer.Option("auto", help="auto, torchcodec, decord or pyav"),
               as_json: bool = typer.Option(False, "--json", help="print all results as JSON"),
               storage_option: List[str] = typer.Option([], "--storage-option", help=STORAGE_HELP)) -> None:
    """PSNR per video and mean, compression (raw / codes and raw / bytes on disk), preview PNG.
    Library: `vidcache.codec.evaluate_store`."""
    from vidcache.codec import evaluate_store

    _use_storage_options(storage_option, store)
    r = evaluate_store(store, split=split, preview=preview, max_videos=max_videos, backend=decoder)
    if as_json:
        _print_json(r)
        return
    from rich.table import Table

    t = Table("video", "PSNR (dB)")
    for name, v in list(r["psnr_per_video"].items())[:20]:
        t.add_row(Path(name).name, f"{v:.2f}")
    out.print(t)
    out.print(f"{r['codebook']}: mean PSNR {r['psnr_mean']:.2f} dB over {r['n_videos']} {split} videos; "
              f"compression {r['compression_codes']:.0f}x (raw / codes), {r['compression_disk']:.0f}x "
              f"(raw / store on disk)" + (f"; preview {r['preview']}" if r.get("preview") else ""))


# ----------------------------------------------------------------------------------------------- cache
def _open_store(store: str, storage_option: List[str]):
    from vidcache.cache import Store

    _use_storage_options(storage_option, store)
    return Store.open(store)


@cache_app.command("info")
def cache_info(store: str = typer.Argument(..., help="store path or URL"),
               as_json: bool = typer.Option(False, "--json", help="print everything as JSON"),
               storage_option: List[str] = typer.Option([], "--storage-option", help=STORAGE_HELP)) -> None:
    """Counts (done / failed / pending per split), arrays, bytes on disk, config and failures.
    Library: `Store.info`."""
    info = _open_store(store, storage_option).info()
    if as_json:
        _print_json(info)
        return
    out.print(f"[bold]{info['url']}[/bold]  kind={info['kind']}  schema={info['schema']}  "
              f"videos={info['num_videos']}  block={info['videos_per_block']}  "
              f"on disk={info['bytes_on_disk'] / 1e6:.1f} MB  config_hash={info['config_hash'][:12]}")
    from rich.table import Table

    t = Table("split", "done", "failed", "pending")
    for split, c in info["splits"].items():
        t.add_row(split, str(c["done"]), str(c["failed"]), str(c["pending"]))
    c = info["counts"]
    t.add_row("[bold]all", str(c["done"]), str(c["failed"]), str(c["pending"]))
    out.print(t)
    for name, a in info["arrays"].items():
        out.print(f"  {name}: {a['dtype']} {a['shape']} chunks {a['chunks']}")
    extra = info["extra"]
    for key in ("protocol", "flops_per_clip", "tokens"):
        if key in extra:
            out.print(f"  {key}: {extra[key]}")
    cfg = info["config"]
    if "backbone" in cfg and isinstance(cfg["backbone"], dict):
        out.print(f"  backbone: {cfg['backbone'].get('name')} (weights {cfg['backbone'].get('weights', '')[:12]})")
    if info["failures"]:
        out.print(f"[bold]failed videos[/bold] ({len(info['failures'])}):")
        for f in info["failures"]:
            out.print(f"  {f['path']}: {f['error']}", markup=False, highlight=False)


@cache_app.command("verify")
def cache_verify(store: str = typer.Argument(..., help="store path or URL"),
                 storage_option: List[str] = typer.Option([], "--storage-option", help=STORAGE_HELP)) -> None:
    """Check every done row is finite and has data, shapes match, failed rows have an error.
    Library: `Store.verify`. Exit code 1 when a problem is found."""
    report = _open_store(store, storage_option).verify()
    out.print(str(report), markup=False)
    if not report.ok:
        raise typer.Exit(1)


@cache_app.command("quantize")
def cache_quantize(store: str = typer.Argument(..., help="clip store with tokens (--tokens full or frames:...)"),
                   output: str = typer.Option(..., "-o", "--output", help="PQ store to write"),
                   subvectors: Optional[int] = typer.Option(None, help="M: uint8 codes per token, dividing D "
                                                                       "(default D/8: 16x fewer bytes than f16)"),
                   train_split: str = typer.Option("train", help="split whose tokens train the codebook"),
                   train_tokens: int = typer.Option(200_000, help="most tokens the codebook is trained on"),
                   seed: int = typer.Option(0, help="seed of the token sample and of k-means"),
                   overwrite: bool = typer.Option(False, help="replace a store made with another config")) -> None:
    """Copy a clip store with its tokens as PQ codes (faiss ProductQuantizer, 8 bits) and the codebook in
    `clips/token_codebook`; every reader decodes them. Resumes. Library: `vidcache.cache.pq.quantize_store`."""
    from vidcache.cache.pq import quantize_store

    with progress_bar("quantizing blocks", None, unit="blocks") as update:
        q = quantize_store(store, output, subvectors, train_split=train_split, train_tokens=train_tokens, seed=seed,
                           overwrite=overwrite, progress=lambda d, n: update(d, n))
    src_bytes = _open_store(store, []).nbytes_on_disk()
    out.print(f"wrote {output}: {q.counts()['done']} done videos, {q.nbytes_on_disk() / 1e6:.1f} MB "
              f"({src_bytes / max(1, q.nbytes_on_disk()):.1f}x smaller than {store})")


@cache_app.command("export")
def cache_export(store: str = typer.Argument(..., help="store path or URL"),
                 output: Path = typer.Option(..., "-o", "--output", help="HDF5 file to write"),
                 format: str = typer.Option("h5", help="export format (h5)"),
                 storage_option: List[str] = typer.Option([], "--storage-option", help=STORAGE_HELP)) -> None:
    """Write the store's tree to HDF5 for other tools. Library: `Store.export_h5`."""
    if format != "h5":
        raise typer.BadParameter(f"unknown --format {format!r}; supported: h5")
    path = _open_store(store, storage_option).export_h5(output)
    out.print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


# ----------------------------------------------------------------------------------------------- probe
def _probe_runner(name: str) -> Callable:
    def run(cfg: dict, store: str, output: Path, preset: Optional[str], storage_option: List[str]) -> None:
        import logging

        from rich.logging import RichHandler
        from rich.progress import Progress

        from vidcache.probe.report import grid_table, report_label, results_table
        from vidcache.probe.run import make_config, run_probe

        logging.getLogger("vidcache").addHandler(RichHandler(console=console.real, show_time=False, show_path=False))
        _use_storage_options(storage_option, store)
        if preset:
            from vidcache.probe.run import run_preset

            with Progress(*progress_columns(), console=console.real,
                          disable=not (console.is_terminal or _force_progress())) as bar:
                res = run_preset(preset, name, store, output, cfg, progress=bar)
        else:
            config = make_config(name, **cfg)
            with Progress(*progress_columns(), console=console.real,
                          disable=not (console.is_terminal or _force_progress())) as bar:
                res = run_probe(name, store, output, config, progress=bar)
        out.print(results_table(res, title=f"{name} probe on {store}"))
        if res.get("grid"):
            out.print(grid_table(res))
        rep = res.get("reported") or {}
        out.print(f"reported: top-1 {rep.get('top1', float('nan')):.2f} on {rep.get('split', '?')}, "
                  f"{report_label(res)}" + (f", preset {res['preset']}" if res.get("preset") else "")
                  + (f", feature {res['feature']}" if res.get("feature", "mean") != "mean" else ""),
                  markup=False, highlight=False)
        out.print(f"results: {Path(output) / 'results.json'}")
    return run


PROBE_HELP = {
    "linear": "A grid of linear heads (lr x wd) trained in one pass, selected on val, reported on test.",
    "attentive": "V-JEPA's attentive probe (cross-attention pooling of stored tokens + linear head).",
    "knn": "DINO's weighted kNN vote on l2-normalised embeddings, every k from one faiss search.",
    "mlp": "An MLP head grid (SCALE's nonlinear baseline), same training and selection as linear.",
}


def _register_probes() -> None:
    from vidcache.probe.config import CONFIGS

    for name, config_cls in CONFIGS.items():
        config_command(probe_app, name, config_cls, _probe_runner(name), params=[
            _param("store", str, typer.Argument(..., help="clip store (path or URL)")),
            _param("output", Path, typer.Option(..., "-o", "--output", help="results folder")),
            _param("preset", Optional[str], typer.Option(None, help=_preset_help(name))),
            _storage_option_param(),
        ], help=f"{PROBE_HELP.get(name, name)} Library: `vidcache.probe.run_probe('{name}', ...)`.")


def _register_dense() -> None:
    from vidcache.dense.config import LinsegConfig, PropagateConfig, RetrievalConfig

    def retrieval(cfg: dict, store: str, output: Path) -> None:
        from vidcache.config import from_dict
        from vidcache.dense.retrieval import results_table, run_retrieval

        config = from_dict(RetrievalConfig, cfg, "retrieval config")
        with progress_bar("retrieving", None, unit="videos") as update:
            res = run_retrieval(store, output, config, progress=lambda d, n: update(d, n))
        out.print(results_table(res, title=f"Hummingbird retrieval on {store} ({res['split']})"))
        out.print(f"results: {Path(output) / 'results.json'}")

    def linseg(cfg: dict, store: str, output: Path) -> None:
        from vidcache.config import from_dict
        from vidcache.dense.linseg import results_table, run_linseg

        config = from_dict(LinsegConfig, cfg, "linseg config")
        with progress_bar("training linear heads", None, unit="steps") as update:
            res = run_linseg(store, output, config, progress=lambda d, n: update(d, n))
        out.print(results_table(res, title=f"linear segmentation on {store}"))
        out.print(f"results: {Path(output) / 'results.json'}")

    config_command(probe_app, "linseg", LinsegConfig, linseg, params=[
        _param("store", str, typer.Argument(..., help="frame-token store (--protocol frames:all --tokens full)")),
        _param("output", Path, typer.Option(..., "-o", "--output", help="results folder")),
    ], help="DINOv2-style linear segmentation: a grid of linear heads on patch tokens (the shared probe "
            "training loop), selected by val mIoU. Library: `vidcache.dense.linseg.run_linseg`.")
    config_command(probe_app, "retrieval", RetrievalConfig, retrieval, params=[
        _param("store", str, typer.Argument(..., help="frame-token store (--protocol frames:all --tokens full)")),
        _param("output", Path, typer.Option(..., "-o", "--output", help="results folder")),
    ], help="Hummingbird dense retrieval: a memory bank of train patch tokens with their patch labels, each "
            "evaluation patch takes the softmax-weighted labels of its k nearest (faiss); mIoU. "
            "Library: `vidcache.dense.retrieval.run_retrieval`.")

    def propagate(cfg: dict, store: str, output: Path, overwrite: bool, storage_option: List[str]) -> None:
        from vidcache.config import from_dict
        from vidcache.dense.propagate import results_table, run_propagate

        config = from_dict(PropagateConfig, cfg, "propagate config")
        _use_storage_options(storage_option, store)
        with progress_bar("propagating", None, unit="sequences") as update:
            res = run_propagate(store, output, config, progress=lambda d, n: update(d, n), overwrite=overwrite)
        out.print(results_table(res, title=f"label propagation on {store} ({res['split']})"))
        out.print(f"masks: {Path(output) / 'Annotations'}; results: {Path(output) / 'results.json'}")

    config_command(probe_app, "propagate", PropagateConfig, propagate, params=[
        _param("store", str, typer.Argument(..., help="frame-token store (--protocol frames:all --tokens full)")),
        _param("output", Path, typer.Option(..., "-o", "--output", help="results folder (Annotations/, results.json)")),
        _param("overwrite", bool, typer.Option(False, help="replace a run made with another config")),
        _storage_option_param(),
    ], help="Semi-supervised video object segmentation by DINO's label propagation on cached frame tokens; "
            "DAVIS-2017 J&F with the copy-the-first-mask baseline. Library: `vidcache.dense.propagate.run_propagate`.")


def _preset_help(probe: str) -> str:
    from vidcache.presets import PRESETS

    mine = [p for p in PRESETS.values() if p.probe == probe]
    if not mine:
        return "protocol of record (none for this probe; see docs/protocols.md)"
    return ("protocol of record, the reference's values under any option given here: " +
            "; ".join(f"{p.name} = {p.reproduces}" for p in mine) + " (docs/protocols.md)")


# ----------------------------------------------------------------------------------------------- scale
def _register_scale() -> None:
    from vidcache.scale.config import ScaleConfig, ScaleEvalConfig

    def train(cfg: dict, store: str, output: Path, overwrite: bool, storage_option: List[str]) -> None:
        from vidcache.config import from_dict
        from vidcache.scale.train import train_from_store

        config = from_dict(ScaleConfig, cfg, "scale config")
        _use_storage_options(storage_option, store)
        with progress_bar("SCALE training", config.epochs, unit="epochs") as update:
            train_from_store(store, output, config, overwrite=overwrite,
                             progress=lambda epoch, m: update(epoch, rate=f"loss {m.get('loss', float('nan')):.3f}"))
        out.print(f"SCALE run in {output} (model.pt, config.json, metrics.jsonl)")

    def evaluate(cfg: dict, run: Path, train_store: str, eval_store: str, output: Optional[Path],
                 storage_option: List[str], allow_mismatch: bool) -> None:
        from vidcache.config import from_dict
        from vidcache.scale.evaluate import evaluate_run, results_table

        config = from_dict(ScaleEvalConfig, cfg, "scale eval config")
        _use_storage_options(storage_option, train_store, eval_store)
        summary = evaluate_run(_exists(run, "SCALE run"), train_store, eval_store, output, config,
                               progress=lambda row, res: console.print(f"  {row} done"),
                               allow_mismatch=allow_mismatch)
        out.print(f"SCALE run trained with the {summary['loss_form']} loss form")
        out.print(results_table(summary))

    config_command(scale_app, "train", ScaleConfig, train, params=[
        _param("store", str, typer.Argument(..., help="clip store with many clips per video (random:16:SEED)")),
        _param("output", Path, typer.Option(..., "-o", "--output", help="run folder")),
        _param("overwrite", bool, typer.Option(False, help="replace a run made with another config")),
        _storage_option_param(),
    ], help="Self-supervised SCALE training (masked clip modelling + set contrastive loss) on cached clip "
            "embeddings. Resumes a run in the same folder. Library: `vidcache.scale.train_from_store`.")
    config_command(scale_app, "eval", ScaleEvalConfig, evaluate, params=[
        _param("run", Path, typer.Argument(..., help="run folder of `vidcache scale train`")),
        _param("train_store", str, typer.Option(..., help="clip store whose train/val splits train the heads")),
        _param("eval_store", str, typer.Option(..., help="clip store (e.g. 5x3) to evaluate on")),
        _param("output", Optional[Path], typer.Option(None, "-o", "--output", help="results folder (RUN/eval)")),
        _storage_option_param(),
        _param("allow_mismatch", bool, typer.Option(False, help="evaluate although the stores (or the run's "
                                                                "training store) differ in classes or extraction")),
    ], help="Linear / MLP / kNN / Transformer / SCALE_linear / SCALE_kNN / SCALE_ft in one table. "
            "Library: `vidcache.scale.evaluate_run`.")


# ----------------------------------------------------------------------------------------------- pretrain
def _register_pretrain() -> None:
    from vidcache.pretrain.config import PretrainConfig
    from vidcache.pretrain.tdv_config import TDVConfig

    def command(config_cls: type, title: str) -> Callable:
        def run(cfg: dict, output: Path, storage_option: List[str]) -> None:
            from vidcache.config import from_dict
            from vidcache.pretrain.train import pretrain

            config = from_dict(config_cls, {**cfg, "out": str(output)}, "pretrain config")
            _use_storage_options(storage_option, config.codes)
            with progress_bar(title, config.steps, unit="steps") as update:
                summary = pretrain(config, progress=lambda step, total, m: update(
                    step, total, rate=f"loss {m.get('loss', float('nan')):.4f}"))
            out.print(f"run {output}: " + ", ".join(f"{k}={v}" for k, v in summary.items()
                                                      if isinstance(v, (int, float, str))))
        return run

    for name, config_cls, title, text in (
            ("vjepa", PretrainConfig, "V-JEPA pretraining",
             "V-JEPA pretraining of a video ViT from a code store (codes decoded on the device). Resumes from "
             "the latest checkpoint; `torchrun --nproc-per-node N -m vidcache pretrain vjepa ...` for DDP. "
             "Checkpoints are backbones: `--backbone vidcache:RUN/ckpt_000500.pt`. Library: "
             "`vidcache.pretrain.pretrain`."),
            ("tdv", TDVConfig, "TDV pretraining",
             "TDV pretraining (frame encoder + motion encoder, the next frame's representation as the target) "
             "from a code store. Defaults fit a CPU; docs/pretrain.md lists the recipe's values. Resumes from the "
             "latest checkpoint; torchrun for DDP. Checkpoints are per-frame backbones: `--backbone "
             "vidcache:RUN/ckpt_000300.pt` (`#motion` for the motion encoder). Library: `vidcache.pretrain.pretrain`.")):
        config_command(pretrain_app, name, config_cls, command(config_cls, title), skip=("out",), params=[
            _param("output", Path, typer.Option(..., "-o", "--output", help="run folder (checkpoints, metrics)")),
            _storage_option_param(),
        ], help=text)


_register_probes()
_register_dense()
_register_scale()
_register_pretrain()


# ----------------------------------------------------------------------------------------------- eval
@eval_app.command("run")
def eval_run(plan: Optional[Path] = typer.Argument(None, help="plan TOML (docs/example_plan.toml)"),
             output: Path = typer.Option(..., "-o", "--output", help="results folder (stores, results, plots)"),
             checkpoint: List[str] = typer.Option([], help="quick run without a plan: checkpoint file, glob or "
                                                           "backbone name (repeatable)"),
             manifest: Optional[Path] = typer.Option(None, help="quick run: the dataset's manifest"),
             probe: List[str] = typer.Option([], help="quick run: probes, e.g. linear,knn (repeatable)"),
             dataset: str = typer.Option("", help="quick run: dataset name (default: the manifest's folder)"),
             protocol: str = typer.Option("1x1", help="quick run: sampling protocol"),
             tokens: str = typer.Option("none", help="quick run: none, full or pool:T,H,W"),
             device: str = typer.Option("auto", help="quick run: auto, cpu, cuda"),
             workers: int = typer.Option(2, help="quick run: decode workers"),
             trust_checkpoint: bool = typer.Option(False, help="allow arbitrary pickles in checkpoints (unsafe)"),
             live: bool = typer.Option(True, help="live table while it runs")) -> None:
    """Evaluate many checkpoints x datasets x probes: one decode per dataset, stores and results keyed by
    content, finished work skipped, a killed run resumes. Writes results.csv, results.json and plots.
    Library: `vidcache.evaluate.run_plan`."""
    from vidcache.evaluate import load_plan, plan_from_flags, rows_table, run_plan, run_plan_multi_gpu

    if plan is not None and checkpoint:
        raise typer.BadParameter("give a PLAN or --checkpoint/--manifest/--probe flags, not both")
    if plan is None:
        if not (checkpoint and manifest and probe):
            raise typer.BadParameter("without a PLAN, give --checkpoint, --manifest and --probe")
        p = plan_from_flags(checkpoint, str(manifest), [x for item in probe for x in item.split(",") if x],
                            dataset=dataset, protocol=protocol, tokens=tokens, device=device, workers=workers,
                            trust_checkpoint=trust_checkpoint)
    else:
        p = load_plan(_exists(plan, "plan"))
    if len(p.run.devices) > 1:
        rows = run_plan_multi_gpu(p, output)
    else:
        rows = run_plan(p, output, live=live and console.is_terminal)
    out.print(rows_table(rows))
    out.print(f"results: {output / 'results.csv'}, {output / 'results.json'}; plots in {output / 'plots'}")


@eval_app.command("watch")
def eval_watch(folder: Path = typer.Argument(..., help="checkpoint folder of a training run"),
               plan: Path = typer.Option(..., help="plan TOML giving datasets and probes"),
               output: Path = typer.Option(..., "-o", "--output", help="results folder (appended to)"),
               poll: float = typer.Option(10.0, help="seconds between polls"),
               format: str = typer.Option("auto", help="checkpoint format: auto, vidcache, vjepa, torchscript"),
               name: str = typer.Option("", help="run name in tables and plots (default: the folder's name)"),
               backbone_option: List[str] = typer.Option([], help="backbone option KEY=VALUE for every checkpoint, "
                                                                  "e.g. feature=cls for TDV runs (repeatable)")) -> None:
    """Evaluate every new checkpoint of FOLDER once it is completely written; Ctrl-C stops cleanly.
    Library: `vidcache.evaluate.watch`."""
    from vidcache.evaluate import load_plan, watch

    from vidcache.evaluate.plan import FORMATS

    if format not in FORMATS:
        raise typer.BadParameter(f"unknown --format {format!r}; use {', '.join(FORMATS)}")
    _exists(folder, "checkpoint folder")
    done = watch(folder, load_plan(_exists(plan, "plan"), need_checkpoints=False), output, poll_s=poll,
                 format=format, run_name=name, live=console.is_terminal, options=_parse_options(backbone_option))
    out.print(f"evaluated {len(done)} checkpoint(s); results in {output}")


@cache_app.command("prune")
def cache_prune(results_dir: Path = typer.Argument(..., help="results folder of `vidcache eval run`"),
                plan: Optional[Path] = typer.Option(None, help="keep only the stores this plan needs"),
                older_than: Optional[str] = typer.Option(None, help="remove stores unused for this long: 30d, "
                                                                     "12h, 45m, 90s (a bare number counts days)"),
                yes: bool = typer.Option(False, "--yes", help="delete without asking")) -> None:
    """Remove stores no plan needs any more (by plan, or by age), after listing them.
    Library: `vidcache.evaluate.prune`."""
    from vidcache.evaluate import load_plan, prune
    from vidcache.evaluate.prune import parse_duration

    seconds = parse_duration(older_than) if older_than is not None else None
    _exists(results_dir, "results folder")
    p = load_plan(_exists(plan, "plan")) if plan is not None else None
    items = prune(results_dir, p, seconds, dry_run=True)
    if not items:
        out.print("nothing to prune")
        return
    for it in items:
        out.print(f"  {it.path}  {it.bytes / 1e6:.1f} MB  {it.reason}")
    total = sum(it.bytes for it in items) / 1e6
    if not yes and not typer.confirm(f"delete these {len(items)} store(s), {total:.1f} MB?", default=False):
        out.print("nothing deleted")
        return
    prune(results_dir, p, seconds, dry_run=False)
    out.print(f"deleted {len(items)} store(s), {total:.1f} MB")


# ----------------------------------------------------------------------------------------------- demo
@app.command("demo")
def demo(out_dir: Path = typer.Option(Path("vidcache-demo"), "-o", "--output", help="working folder"),
         videos: int = typer.Option(240, help="videos in the synthetic corpus"),
         workers: int = typer.Option(2, help="decode workers"),
         seed: int = typer.Option(0, help="seed of the corpus and the probes"),
         full: bool = typer.Option(False, "--full", help="also pretrain vit_micro from the codes (V-JEPA) and "
                                                         "probe it next to its random init"),
         pretrain_steps: int = typer.Option(300, help="--full: pretraining steps")) -> None:
    """The main job on the built-in synthetic corpus and `tiny` backbone: synthesise, extract, probe,
    compress to patch codes, aggregate with SCALE. Library: `vidcache.demo.run_demo`."""
    from vidcache.demo import run_demo

    run_demo(out_dir, videos=videos, workers=workers, seed=seed, console=out.real, progress=progress_bar, full=full,
             pretrain_steps=pretrain_steps)


# ----------------------------------------------------------------------------------------------- entry
INTERRUPTED = "interrupted: finished work is saved; rerun the same command to resume"

# Output parameters are checked while the command line is parsed, before any work: a path under a
# plain file, a folder where a file is written, or a file where a folder (run, results, store) is.
OUTPUT_PARAMS = ("output", "out_dir", "preview")
FILE_OUTPUTS = {("data", "manifest", "output"), ("codec", "train", "output"), ("cache", "export", "output"),
                ("codec", "eval", "preview")}


def check_output_path(path, kind: str) -> None:
    """Raise BadParameter when `path` cannot be written as a `kind` ("file" or "folder") output."""
    if path is None or "://" in str(path):  # object stores have no folders to check
        return
    p = Path(path)
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise typer.BadParameter(f"cannot write {p}: {parent} is a file, not a folder; choose another path")
            break
    if kind == "file" and p.is_dir():
        raise typer.BadParameter(f"{p} is a folder; give the name of a file to write")
    if kind == "folder" and p.exists() and not p.is_dir():
        raise typer.BadParameter(f"{p} is a file; give a folder (new or earlier output) instead")


def _output_callback(kind: str, previous: Callable | None):
    def callback(ctx, param, value):
        for v in (value if isinstance(value, (list, tuple)) else [value]):
            check_output_path(v, kind)
        return previous(ctx, param, value) if previous is not None else value
    return callback


def _check_device(value) -> None:
    import re

    if value is not None and not re.match(r"^(auto|cpu|cuda|cuda:\d+|mps)$", str(value)):
        raise typer.BadParameter(f"unknown device {value!r}; use auto, cpu, cuda or cuda:N")


def _check_key_values(value, what: str) -> None:
    for item in value or []:
        key, sep, _ = str(item).partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{what} {item!r} must look like KEY=VALUE")


def _check_decoder(value) -> None:
    from vidcache.video.decode import BACKENDS

    if value is not None and value not in BACKENDS:
        raise typer.BadParameter(f"decoder must be one of {', '.join(BACKENDS)}, got {value!r}")


# Options that recur across commands, checked by name while the command line is parsed.
SHARED_CHECKS = {"device": _check_device, "decoder": _check_decoder,
                 "storage_option": lambda v: _check_key_values(v, "storage option"),
                 "backbone_option": lambda v: _check_key_values(v, "backbone option")}


def _value_callback(check: Callable, previous: Callable | None):
    def callback(ctx, param, value):
        check(value)
        return previous(ctx, param, value) if previous is not None else value
    return callback


class _CoercionOnFirstValue:
    """Stands in for typer's coercion of one parameter until a value needs it.

    typer (0.2x) builds a pydantic adapter for every parameter it processes, even for an absent option
    whose value is None and needs no coercion (the `--help` of every group on the way to a command);
    the first such build imports pydantic, a fifth of a second of every `--help`. Absent values pass
    as typer passes them; the first present one builds typer's own coercion, which then takes over.
    """

    def coerce(self, value, param, ctx):
        if value is None and not (param.multiple or param.nargs == -1):
            return None
        param._runtime_param = None
        return param.get_runtime_param().coerce(value, param=param, ctx=ctx)


def _defer_coercion(param) -> None:
    if getattr(param, "_runtime_param", False) is None and hasattr(param, "get_runtime_param"):
        param._runtime_param = _CoercionOnFirstValue()


def _deferring(get_help_option):
    def wrapped(ctx):
        option = get_help_option(ctx)
        if option is not None:
            _defer_coercion(option)
        return option

    return wrapped


def _command_with_checks(argv: list[str] | None = None):
    """The click command tree that runs `argv`, with output paths and shared options checked while parsing.

    When `argv` starts with a group's name (`probe linear ...`), only that group is built, under the
    program name `vidcache probe`: building every group's commands is start-up time. Returns
    (command, prog_name).
    """
    group = next((g for g in app.registered_groups if argv and g.name == argv[0]), None)
    if group is None:
        root, path, prog = typer.main.get_command(app), (), "vidcache"
    else:
        root, path, prog = typer.main.get_group(group.typer_instance), (group.name,), f"vidcache {group.name}"

    def walk(cmd, path: tuple) -> None:
        for sub_name, sub in (getattr(cmd, "commands", None) or {}).items():
            walk(sub, path + (sub_name,))
        for param in getattr(cmd, "params", []):
            if param.name in OUTPUT_PARAMS:
                kind = "file" if path + (param.name,) in FILE_OUTPUTS else "folder"
                param.callback = _output_callback(kind, param.callback)
            elif param.name in SHARED_CHECKS:
                param.callback = _value_callback(SHARED_CHECKS[param.name], param.callback)
            _defer_coercion(param)
        if hasattr(cmd, "get_help_option"):  # the help option is made when first parsed
            cmd.get_help_option = _deferring(cmd.get_help_option)

    walk(root, path)
    return root, prog


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one line on stderr and exit code 2, never a traceback.

    Usage errors that click detects (unknown option, bad value, missing argument, BadParameter) and
    errors the library raises (`VidcacheError`) are printed here as one `error: ...` line; Ctrl-C
    prints one `interrupted: ...` line and exits with 130 (typer turns KeyboardInterrupt into
    exit code 130, which no command returns otherwise).
    """
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        if argv == ["--version"]:  # needs no command tree
            print(f"vidcache {vidcache.__version__}")
            sys.exit(0)
        command, prog = _command_with_checks(argv)
        code = command.main(args=argv[1:] if prog != "vidcache" else argv, prog_name=prog, standalone_mode=False)
    except VidcacheError as e:
        _error_line(str(e))
        sys.exit(EXIT_USAGE)
    except typer.Abort:  # Ctrl-C (or end of input) at a prompt
        console.print(INTERRUPTED, markup=False, highlight=False)
        sys.exit(130)
    except typer.TyperException as e:  # click's usage errors, raised as such outside standalone mode
        if type(e).__name__ == "NoArgsIsHelpError":  # a group without a command: its help
            text = e.format_message()  # (empty when typer's rich layout has printed it already)
            if text.strip():
                print(text)
            sys.exit(getattr(e, "exit_code", EXIT_USAGE))
        ctx = getattr(e, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        message = e.format_message() if hasattr(e, "format_message") else str(e)
        _error_line(message + hint)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:  # Ctrl-C outside a command
        console.print(INTERRUPTED, markup=False, highlight=False)
        _quiet_shutdown()
        sys.exit(130)
    if code == 130:
        console.print(INTERRUPTED, markup=False, highlight=False)
        _quiet_shutdown()
    sys.exit(code if isinstance(code, int) else 0)


def _error_line(text: str) -> None:
    console.print(f"error: {' '.join(text.split())}", markup=False, highlight=False, soft_wrap=True)
    _quiet_shutdown()


def _quiet_shutdown() -> None:
    """Nothing after the one line. A remote store that failed mid-write leaves zarr's asyncio writes
    pending; they are torn down at exit, and asyncio's logger ("Task was destroyed but it is
    pending!") and the unraisable hook ("Exception ignored in ...", a traceback) would print them."""
    import logging

    logging.getLogger("asyncio").disabled = True
    sys.unraisablehook = lambda unraisable: None


if __name__ == "__main__":
    main()
