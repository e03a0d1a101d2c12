"""The zarr store API shared by clip stores and code stores (DESIGN.md §2)."""

from vidcache.cache.store import DONE, FAILED, PENDING, ArraySpec, Store, VerifyReport, manifest_digest

__all__ = ["Store", "ArraySpec", "VerifyReport", "manifest_digest", "PENDING", "DONE", "FAILED"]
