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
