"""The one error family kmsr raises for failures a user can act on.

:class:`KmsrError` carries a one-line message and optionally a ``hint`` (the next thing to try);
the command line prints both and exits with code 1. :class:`KmsrInputError` (bad arguments to an
op) also subclasses ValueError, so callers that do not know kmsr can still catch it.
"""


class KmsrError(Exception):
    """A failure the user can act on: what went wrong, and optionally the next thing to try."""

    def __init__(self, *args: object, hint: str | None = None):
        super().__init__(*args)
        self.hint = hint


class KmsrInputError(KmsrError, ValueError):
    """An argument does not have the shape, type or values an op expects."""


class ImageReadError(KmsrInputError):
    """An image file is missing, unreadable or corrupt; the message names the file."""
