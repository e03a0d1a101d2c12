"""Datasets: manifests, importers of official split files, and the synthetic corpus."""

from vidcache.data.manifest import Manifest, read_manifest

__all__ = ["Manifest", "read_manifest"]
