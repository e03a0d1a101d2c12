"""vidcache: extract video features once, learn cheaply on the cache."""

__version__ = "0.1.0"
