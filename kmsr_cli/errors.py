"""The error family of the pipeline, under the name the command line used to give it.

The pipeline raises :class:`kmsr_ops.errors.KmsrError` (message and optional ``hint``) and its
subclasses; ``CliError`` is the same class under its old name, so ``except CliError`` and
``pytest.raises(CliError)`` keep catching the whole family. Only ``kmsr_cli.app`` turns these
errors into a one-line message and an exit code.
"""

from __future__ import annotations

from kmsr_ops.errors import ImageReadError, KmsrError, KmsrInputError

CliError = KmsrError

__all__ = ["CliError", "ImageReadError", "KmsrError", "KmsrInputError"]
