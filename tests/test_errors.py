"""One error family: KmsrError (message, optional hint), its subclasses, and how the CLI maps them."""

from __future__ import annotations

import pickle

from rich.console import Console

from kmsr_cli.commands.failure import Failure, failure_of, show
from kmsr_cli.errors import CliError
from kmsr_ops.errors import ImageReadError, KmsrError, KmsrInputError


def test_one_family_with_the_old_name():
    assert CliError is KmsrError
    assert issubclass(KmsrInputError, KmsrError) and issubclass(KmsrInputError, ValueError)
    assert issubclass(ImageReadError, KmsrInputError)
    e = KmsrError("a.h5: no such file", hint="kmsr pool show FILE")
    assert str(e) == "a.h5: no such file" and e.hint == "kmsr pool show FILE"
    assert KmsrInputError("bad").hint is None
    back = pickle.loads(pickle.dumps(e))  # worker processes send errors back pickled
    assert type(back) is KmsrError and str(back) == str(e) and back.hint == e.hint


def test_every_user_error_maps_to_one_line_and_exit_code_1():
    assert failure_of(KmsrError("x", hint="y")) == Failure("x", "y", 1)
    assert failure_of(KmsrInputError("--device tpu")) == Failure("--device tpu", None, 1)
    assert failure_of(FileNotFoundError("gone")).exit_code == 1
    assert failure_of(KeyboardInterrupt()).exit_code == 130
    assert failure_of(RuntimeError("a bug")) is None


def test_show_prints_message_and_hint_verbatim():
    console = Console(record=True, width=200, color_system=None)
    show(Failure("[abc].h5: no such file", "kmsr pool show [abc].h5"), console)
    assert console.export_text().splitlines() == ["error: [abc].h5: no such file", "try: kmsr pool show [abc].h5"]
