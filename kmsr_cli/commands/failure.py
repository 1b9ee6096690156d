"""The one place that turns an exception into what the command line shows and its exit code.

Every failure a user can act on is one line on stderr (``error: MESSAGE`` and, when the error
carries one, ``try: HINT``) and exit code 1: the library's :class:`~kmsr_ops.errors.KmsrError`
family (device errors from ``resolve_device`` included) and the OS's missing-file and permission
errors. Ctrl-C is ``interrupted`` and exit code 130. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from dataclasses import dataclass

from kmsr_ops.errors import KmsrError

USER_ERRORS: tuple[type[BaseException], ...] = (KmsrError, FileNotFoundError, PermissionError, IsADirectoryError)
INTERRUPTED = 130


@dataclass(frozen=True)
class Failure:
    """What the command line says about a failure: one line, an optional hint, the exit code."""

    message: str
    hint: str | None = None
    exit_code: int = 1


def failure_of(exc: BaseException) -> Failure | None:
    """The :class:`Failure` for ``exc``, or None when it is not a user error (a bug)."""
    if isinstance(exc, KeyboardInterrupt):
        return Failure("interrupted", exit_code=INTERRUPTED)
    if isinstance(exc, USER_ERRORS):
        hint = getattr(exc, "hint", None)
        return Failure(str(exc), str(hint) if hint else None)
    return None


def show(failure: Failure, console) -> None:
    """Print ``failure`` on ``console`` (stderr); messages quote paths and values, so never as markup."""
    from rich.markup import escape

    if failure.exit_code == INTERRUPTED:
        console.print("[yellow]interrupted[/]")
        return
    console.print(f"[bold red]error:[/] {escape(failure.message)}", highlight=False, soft_wrap=True)
    if failure.hint:
        console.print(f"[dim]try:[/] {escape(failure.hint)}", highlight=False, soft_wrap=True)
