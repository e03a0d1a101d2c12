"""The zarr store API shared by clip stores and code stores (DESIGN.md §2)."""

from vidcache.cache.store import (DONE, FAILED, PENDING, ArraySpec, Store, StoredCodebook, VerifyReport,
                                  manifest_digest)

__all__ = ["Store", "ArraySpec", "StoredCodebook", "VerifyReport", "manifest_digest", "PENDING", "DONE", "FAILED"]
