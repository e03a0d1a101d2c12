"""Datasets: manifests, importers of official split files, and the synthetic corpus."""

from vidcache.data.importers import (
    IMPORTERS,
    MissingVideosWarning,
    import_manifest,
    manifest_from_folders,
    manifest_from_hmdb51,
    manifest_from_kinetics,
    manifest_from_ssv2,
    manifest_from_ucf101,
)
from vidcache.data.manifest import Manifest, read_manifest
from vidcache.data.synth import CLASS_NAMES, SynthConfig, class_kind, synthesize

__all__ = [
    "CLASS_NAMES",
    "IMPORTERS",
    "Manifest",
    "MissingVideosWarning",
    "SynthConfig",
    "class_kind",
    "import_manifest",
    "manifest_from_folders",
    "manifest_from_hmdb51",
    "manifest_from_kinetics",
    "manifest_from_ssv2",
    "manifest_from_ucf101",
    "read_manifest",
    "synthesize",
]
