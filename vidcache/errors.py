"""User-facing errors.

Anything the user can fix (a missing file, a bad option, a store made with another config) raises a
`VidcacheError` subclass with a one-line message that says what is wrong and how to fix it. The CLI
prints that line and exits with code 2; a traceback is reserved for bugs.
"""


class VidcacheError(Exception):
    """An error the user can fix; its message is one line."""


class ConfigError(VidcacheError):
    """A config with one or more invalid fields; every problem is listed, not only the first."""

    def __init__(self, problems: list[str], what: str = "config"):
        self.problems, self.what = list(problems), what
        super().__init__(f"invalid {what}: " + "; ".join(self.problems))

    def __reduce__(self):  # rebuild from its fields when it crosses a process boundary
        return type(self), (self.problems, self.what)


class StoreError(VidcacheError):
    """A store that cannot be opened or written as asked (wrong kind, schema, config hash...)."""


class DataError(VidcacheError):
    """Bad input data: a manifest, a split, features with NaN, a corrupt file."""


# fsspec protocols whose filesystem package comes with one of vidcache's extras.
_FS_EXTRAS = {"s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3")}


def missing_filesystem(url: str, err: BaseException) -> str | None:
    """One line for a URL whose fsspec filesystem is not installed (s3:// without s3fs), else None."""
    proto = str(url).split("://", 1)[0] if "://" in str(url) else ""
    if not proto or proto == "file" or not isinstance(err, ImportError):
        return None
    if proto in _FS_EXTRAS:
        package, extra = _FS_EXTRAS[proto]
        return f"{url}: {proto}:// URLs need {package}: pip install 'vidcache[{extra}]'"
    return f"{url}: the {proto}:// filesystem is not installed ({err})"
