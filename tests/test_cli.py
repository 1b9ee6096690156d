"""The CLI contract: exit codes, stdout for data and stderr for the rest, one-line errors, --json.

Run in subprocesses (python -m kmsr_cli), the way shells and pipelines see the program.
"""

from __future__ import annotations

import json

import h5py
import pytest

from kmsr_cli import __version__


def test_version(run_kmsr):
    proc = run_kmsr("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"kmsr {__version__}\n"
    assert "Traceback" not in proc.stderr


def test_no_arguments_shows_help(run_kmsr):
    proc = run_kmsr()
    # Click's no_args_is_help: help text, exit 0 (older Click) or 2 (a usage error, newer Click).
    assert proc.returncode in (0, 2)
    text = proc.stdout + proc.stderr
    assert "Usage: kmsr" in text
    for command in ("plugins", "pool"):
        assert command in text
    assert "Traceback" not in text


def test_unknown_command_is_a_usage_error(run_kmsr):
    proc = run_kmsr("frobnicate")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "frobnicate" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_user_error_is_one_line_on_stderr(run_kmsr):
    proc = run_kmsr("pool", "show", "missing.h5")
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0] == "error: missing.h5: no such file"
    assert all(line.startswith(("error:", "try:")) for line in lines) and len(lines) <= 2


def test_error_message_is_printed_verbatim(run_kmsr):
    # Square brackets in a path are not rich markup: the message keeps them.
    proc = run_kmsr("pool", "show", "[abc].h5")
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[0] == "error: [abc].h5: no such file"


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(run_kmsr, how):
    if how == "flag":
        proc = run_kmsr("--debug", "pool", "show", "missing.h5")
    else:
        proc = run_kmsr("pool", "show", "missing.h5", env={"KMSR_DEBUG": "1"})
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "Traceback (most recent call last)" in proc.stderr
    assert "KmsrError: missing.h5: no such file" in proc.stderr  # CliError is KmsrError


def test_json_goes_to_stdout_only(run_kmsr):
    proc = run_kmsr("plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert isinstance(doc, dict) and "generators" in doc
    assert '"generators"' not in proc.stderr


def test_pool_synth_json_names_the_file(run_kmsr, tmp_path):
    out = tmp_path / "sub" / "g.h5"
    proc = run_kmsr("pool", "synth", "--family", "gaussian", "-n", "7", "--size", "9", "--scale", "3",
                    "--seed", "5", "-o", out, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)  # exactly one JSON document, nothing else on stdout
    assert doc == {"path": str(out), "count": 7, "family": "gaussian", "kernel_size": 9, "scale": 3, "seed": 5}
    assert out.is_file()
    with h5py.File(out, "r") as f:
        assert f["kernels"].shape == (7, 9, 9)
        assert int(f.attrs["scale"]) == 3
        assert list(f["provenance/seed"][...]) == [5] * 7
    assert [p.name for p in out.parent.iterdir()] == ["g.h5"]  # no temporary file left


def test_pool_synth_plain_prints_the_path(run_kmsr, tmp_path):
    out = tmp_path / ("long-name-" * 12 + ".h5")  # longer than a terminal line
    proc = run_kmsr("pool", "synth", "-n", "2", "--size", "5", "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{out}\n"  # one line, unwrapped, for pipelines


def test_pool_synth_bad_option_is_explained(run_kmsr, tmp_path):
    proc = run_kmsr("pool", "synth", "--family", "gaussian", "-n", "2", "--size", "9", "--option", "nosuch=1",
                    "-o", tmp_path / "x.h5")
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "rejected the options" in proc.stderr and "nosuch" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "x.h5").exists()
