"""Errors the CLI reports as a one-line message (exit code 1) instead of a traceback."""

from __future__ import annotations


class CliError(Exception):
    """A failure the user can act on: what went wrong, and optionally the next command to try."""

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.hint = hint
