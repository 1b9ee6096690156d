"""Exceptions raised by the ops for bad input.

They subclass ValueError so callers that do not know kmsr can still catch them; the CLI
turns them into a one-line message and exit code 1.
"""


class KmsrInputError(ValueError):
    """An argument does not have the shape, type or values an op expects."""


class ImageReadError(KmsrInputError):
    """An image file is missing, unreadable or corrupt; the message names the file."""
