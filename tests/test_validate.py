"""kmsr_ops.validate: the option checks the built-in plugins share (values and wording)."""

from __future__ import annotations

import numpy as np
import pytest

from kmsr_ops.errors import KmsrInputError
from kmsr_ops.validate import check_choice, check_float, check_int, check_probability, check_range


def _bad(match, fn, *args, **kwargs):
    with pytest.raises(KmsrInputError, match=match):
        fn(*args, **kwargs)


def test_values_come_back_as_plain_python():
    assert check_choice("mode", "a", ("a", "b")) == "a"
    v = check_int("n", np.int64(5))
    assert v == 5 and type(v) is int
    assert check_int("k", 7, 3, odd=True) == 7
    assert check_int("q", 100, 1, 100) == 100
    assert type(check_float("x", np.float32(0.5))) is float
    assert check_float("x", -1, positive=False) == -1.0
    assert check_probability("p", 1) == 1.0
    assert check_range("r", 0, 2) == (0.0, 2.0)


def test_refusals_keep_the_plugins_wording():
    _bad(r"^mode: expected one of a, b, found 'c'$", check_choice, "mode", "c", ("a", "b"))
    _bad(r"^n: expected an integer >= 1, found True$", check_int, "n", True)
    _bad(r"^n: expected an integer >= 0, found 1.5$", check_int, "n", 1.5, 0)
    _bad(r"^k: expected an odd integer >= 1, found 4$", check_int, "k", 4, odd=True)
    _bad(r"^q: expected an integer JPEG quality in 1..100, found 101$", check_int, "q", 101, 1, 100,
         expected="an integer JPEG quality in 1..100")
    _bad(r"^x: expected a positive finite number, found 0$", check_float, "x", 0)
    _bad(r"^x: expected a finite number, found nan$", check_float, "x", float("nan"), positive=False)
    _bad(r"^x: expected a positive finite number, found False$", check_float, "x", False)
    _bad(r"^p: expected a probability in \[0, 1\], found 1.5$", check_probability, "p", 1.5)
    _bad(r"^r: expected finite numbers, found \(True, 2\)$", check_range, "r", True, 2)
    _bad(r"^r: expected 0.0 < low <= high, found \(0.0, 1.0\)$", check_range, "r", 0, 1, strict_low=True)
    _bad(r"^r: expected 0.0 <= low <= high, found \(2.0, 1.0\)$", check_range, "r", 2, 1)
