"""The base install is enough: every `vidcache` module imports with only `install_requires` on the path.

A fresh interpreter runs with no site-packages (`python -I -S`) and, on its path, one folder of links
to exactly the files of the base requirements (setup.cfg's `install_requires`, their markers evaluated
here) and of everything those require in turn, plus `vidcache` itself: what `pip install .` gives a
new user, and nothing that an extra or the test tools brought. In it every module must import, and
each optional integration (hub, s3, gpu, torchcodec, decord) must fail only when used, with one line
that names what to install.
"""

import configparser
import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import vidcache

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(vidcache.__file__).resolve().parent
# Distributions of the extras and of the test tools, which the base install must never need.
NOT_BASE = ("transformers", "timm", "s3fs", "torchcodec", "faiss-gpu-cu12", "scikit-learn", "scikit-video",
            "pytest", "moto", "xarray", "import-linter")


def base_requirements() -> list[Requirement]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = [x.strip() for x in cfg["options"]["install_requires"].splitlines()]
    reqs = [Requirement(x) for x in lines if x and not x.startswith("#")]
    return [r for r in reqs if r.marker is None or r.marker.evaluate()]


def closure(reqs: list[Requirement], exclude=()) -> set[str]:
    """The installed distributions that `reqs` need, transitively (no extras), by canonical name."""
    seen, todo = set(), [canonicalize_name(r.name) for r in reqs]
    while todo:
        name = todo.pop()
        if name in seen or name in exclude:
            continue
        seen.add(name)
        for line in metadata.distribution(name).requires or []:
            r = Requirement(line)
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(r.name))
    return seen


def _link(src: Path, dst: Path) -> None:
    if not dst.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(src, target_is_directory=src.is_dir())


def link_farm(out: Path, dists: set[str]) -> Path:
    """A folder holding links to the importable files (and the metadata) of `dists` and to vidcache.

    A top-level folder without `__init__.py` (a namespace such as `nvidia`, or `numpy.libs`) is made
    real and only the entries under it that belong to the distribution are linked.
    """
    for name in sorted(dists):
        dist = metadata.distribution(name)
        base = Path(dist.locate_file(""))
        for f in dist.files or []:
            parts = Path(f).parts
            if not parts or parts[0] == ".." or parts[0] == "__pycache__":
                continue
            top = base / parts[0]
            if top.is_dir() and not (top / "__init__.py").exists() and len(parts) > 1 \
                    and not parts[0].endswith(".dist-info"):
                _link(top / parts[1], out / parts[0] / parts[1])
            else:
                _link(top, out / parts[0])
    _link(PACKAGE, out / "vidcache")
    return out


@pytest.fixture(scope="module")
def farms(tmp_path_factory):
    reqs = base_requirements()
    dists = closure(reqs)
    leaked = sorted(d for d in map(canonicalize_name, NOT_BASE) if d in dists)
    assert not leaked, f"the base requirements pull in {leaked}"
    root = tmp_path_factory.mktemp("base_env")
    return {"base": link_farm(root / "base", dists),
            "no_decord": link_farm(root / "no_decord", closure(reqs, exclude={"decord"}))}


def run_base(farm: Path, code: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter that sees the stdlib and `farm` only."""
    prelude = f"import sys; sys.path.insert(0, {str(farm)!r})\n"
    return subprocess.run([sys.executable, "-I", "-S", "-c", prelude + code], capture_output=True, text=True,
                          timeout=timeout, cwd=farm)


def test_the_farm_sees_only_the_base_install(farms):
    code = ("import importlib.util, json\n"
            "names = ['torch', 'zarr', 'typer', 'safetensors', 'av', 'decord', 'transformers', 'timm', 's3fs',"
            " 'torchcodec', 'sklearn', 'skvideo', 'pytest', 'moto', 'xarray']\n"
            "print(json.dumps({n: importlib.util.find_spec(n) is not None for n in names}))\n")
    found = json.loads(run_base(farms["base"], code).stdout)
    assert [n for n, ok in found.items() if ok] == ["torch", "zarr", "typer", "safetensors", "av", "decord"]
    found = json.loads(run_base(farms["no_decord"], code).stdout)
    assert not found["decord"] and found["torch"]


_IMPORT_ALL = r"""
import importlib, json, pkgutil, traceback
import vidcache
names = sorted(m.name for m in pkgutil.walk_packages(vidcache.__path__, "vidcache."))
failed = {}
for name in names:
    try:
        importlib.import_module(name)
    except BaseException as e:
        failed[name] = f"{type(e).__name__}: {e}"
extras = sorted(m for m in ("transformers", "timm", "s3fs", "torchcodec", "sklearn", "skvideo") if m in sys.modules)
print(json.dumps({"modules": names, "failed": failed, "extras_loaded": extras, "file": vidcache.__file__}))
"""


def test_every_module_imports_with_the_base_requirements_only(farms):
    r = run_base(farms["base"], _IMPORT_ALL)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["file"].startswith(str(farms["base"]))  # this checkout's package, through the farm
    assert len(report["modules"]) > 60 and "vidcache.models.hf" in report["modules"]
    assert report["failed"] == {}
    assert report["extras_loaded"] == []


def cli_base(farm: Path, argv: list[str]) -> dict:
    """`vidcache ARGV` in the base environment: its exit code and stderr."""
    r = run_base(farm, f"from vidcache.cli import main\nmain({argv!r})\n")
    return {"code": r.returncode, "stderr": r.stderr}


def _one_line(res: dict, *needles: str) -> str:
    lines = res["stderr"].strip().splitlines()
    assert res["code"] == 2 and len(lines) == 1 and "Traceback" not in res["stderr"], res
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """A real two-video manifest (made with this interpreter, which has every package)."""
    from vidcache.data.synth import SynthConfig, synthesize

    out = tmp_path_factory.mktemp("base_corpus")
    synthesize(out, SynthConfig(videos=2, classes=2, size=32, frames=8), workers=1)
    return out / "manifest.csv"


@pytest.mark.parametrize("backbone,package", [("hf:facebook/vjepa2-vitl-fpc64-256", "transformers"),
                                              ("timm:vit_small_patch16_224", "timm")])
def test_hub_backbones_name_the_hub_extra(farms, manifest, tmp_path, backbone, package):
    res = cli_base(farms["base"], ["extract", "clips", str(manifest), "-o", str(tmp_path / "s.zarr"),
                                   "--backbone", backbone, "--protocol", "1x1"])
    _one_line(res, package, "pip install 'vidcache[hub]'")
    assert not (tmp_path / "s.zarr").exists()


def test_s3_urls_name_the_s3_extra(farms, manifest):
    res = cli_base(farms["base"], ["extract", "clips", str(manifest), "-o", "s3://bucket/s.zarr",
                                   "--backbone", "tiny", "--protocol", "1x1"])
    _one_line(res, "s3fs", "pip install 'vidcache[s3]'")


def test_s3_videos_name_the_s3_extra_before_any_store(farms, manifest, tmp_path):
    remote = tmp_path / "remote.csv"
    remote.write_text("path,label,split\ns3://bucket/a.mp4,a,train\ns3://bucket/b.mp4,b,train\n")
    res = cli_base(farms["base"], ["extract", "clips", str(remote), "-o", str(tmp_path / "s.zarr"),
                                   "--backbone", "tiny", "--protocol", "1x1"])
    _one_line(res, "s3://bucket/a.mp4", "pip install 'vidcache[s3]'")
    assert not (tmp_path / "s.zarr").exists()


def test_torchcodec_decoder_names_the_torchcodec_extra(farms, manifest, tmp_path):
    res = cli_base(farms["base"], ["extract", "clips", str(manifest), "-o", str(tmp_path / "s.zarr"),
                                   "--backbone", "tiny", "--protocol", "1x1", "--decoder", "torchcodec"])
    _one_line(res, "torchcodec", "pip install 'vidcache[torchcodec]'")


def test_decord_decoder_without_decord_says_what_to_do(farms, manifest, tmp_path):
    """Where decord is not a base requirement (not x86_64), asking for it is one line; auto decodes on."""
    res = cli_base(farms["no_decord"], ["extract", "clips", str(manifest), "-o", str(tmp_path / "s.zarr"),
                                        "--backbone", "tiny", "--protocol", "1x1", "--decoder", "decord"])
    _one_line(res, "decord", "pip install decord", "--decoder pyav")
    res = cli_base(farms["no_decord"], ["extract", "clips", str(manifest), "-o", str(tmp_path / "auto.zarr"),
                                        "--backbone", "tiny", "--protocol", "1x1", "--workers", "0"])
    assert res["code"] == 0, res["stderr"][-2000:]


def test_gpu_device_without_a_gpu_names_the_gpu_extra(farms):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the no-GPU message is not reached")
    r = run_base(farms["base"], "from vidcache.codec.kmeans import resolve_device\n"
                                "from vidcache.errors import VidcacheError\n"
                                "try:\n    resolve_device('cuda')\nexcept VidcacheError as e:\n    print(e)\n")
    assert r.returncode == 0, r.stderr[-2000:]
    line = r.stdout.strip()
    assert len(line.splitlines()) == 1 and re.search(r"pip install 'vidcache\[gpu\]'", line), line
