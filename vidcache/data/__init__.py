"""Datasets: manifests, importers of official split files, and the synthetic corpus."""

from vidcache._lazy import exports

__getattr__, __dir__, __all__ = exports(__name__, {
    "vidcache.data.importers": ["IMPORTERS", "MissingVideosWarning", "import_manifest", "manifest_from_folders",
        "manifest_from_hmdb51", "manifest_from_kinetics", "manifest_from_ssv2", "manifest_from_ucf101"],
    "vidcache.data.manifest": ["Manifest", "read_manifest"],
    "vidcache.data.config": ["CLASS_NAMES", "SynthConfig"],
    "vidcache.data.synth": ["class_kind", "synthesize"],
})
