"""Conformance checks for kmsr backends, for plugin authors (``kmsr plugins --check NAME``).

:func:`check_backend` builds a registered backend with the keywords the pipeline passes
(:data:`kmsr_cli.hookspecs.FACTORY_KEYWORDS`), runs it on tiny inputs, and compares what it does
with what the hookspecs require and what its registration declares: kernel shapes and sums,
determinism under a seed (resumed runs depend on it), a backbone's output size, channels and
receptive field, a degradation's shapes and its use of the ``torch.Generator``, a trainable
generator's checkpoint round trip through ``kmsr gan train``. Each result is a
:class:`Finding`; a :class:`BackendReport` collects them and ``raise_for_errors()`` turns the
errors into one :class:`PluginContractError`::

    from kmsr_cli.plugin_check import check_backend
    report = check_backend("backbones", "my_net")
    print(report.summary())
    report.raise_for_errors()

Findings are ``error`` (the pipeline would fail or give wrong results), ``warning`` (it works,
but probably not as meant), ``ok`` (a check that passed) or ``skipped`` (the backend cannot run
here, e.g. no GPU). Everything runs on the CPU, single images, a few seconds per backend (the
built-in D-DBPN's receptive-field probe takes longer). ``docs/write-a-plugin.md`` shows it on
the example plugin.
"""

from __future__ import annotations

import difflib
import inspect
import json
import numbers
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kmsr_ops.errors import KmsrError

from . import hookspecs

ERROR, WARNING, OK, SKIPPED = "error", "warning", "ok", "skipped"
KINDS = tuple(hookspecs.HOOK_KINDS)
INPUT_KINDS = ("upsampled", "lr")
CHANNEL_KINDS = ("rgb", "y")
CHECK_KERNEL_SIZE = 9  # small odd kernels keep estimators and generators quick
PATCH_SIDE = 128  # the smallest patch kmsr estimate cuts (kmsr_cli.estimate.MIN_PATCH)


@dataclass(frozen=True)
class Finding:
    """One check's outcome: ``check`` names what was checked, ``level`` how it went."""

    check: str
    level: str
    message: str

    def as_dict(self) -> dict:
        return {"check": self.check, "level": self.level, "message": self.message}


@dataclass
class BackendReport:
    """Every finding for one backend."""

    kind: str
    name: str
    plugin: str
    findings: list[Finding] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == WARNING]

    @property
    def skipped(self) -> bool:
        return any(f.level == SKIPPED for f in self.findings)

    @property
    def passed(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict:
        return {"kind": self.kind, "name": self.name, "plugin": self.plugin, "passed": self.passed,
                "skipped": self.skipped, "errors": len(self.errors), "warnings": len(self.warnings),
                "seconds": round(self.seconds, 2), "findings": [f.as_dict() for f in self.findings]}

    def summary(self) -> str:
        """One line per finding, under a headline."""
        state = "skipped" if self.skipped and self.passed else ("passed" if self.passed else "FAILED")
        head = (f"{self.kind[:-1]} {self.name!r} (plugin {self.plugin!r}): {state}, "
                f"{len(self.errors)} errors, {len(self.warnings)} warnings")
        return "\n".join([head, *(f"  {f.level:7} {f.check}: {f.message}" for f in self.findings)])

    def raise_for_errors(self) -> BackendReport:
        """This report, or :class:`PluginContractError` when any check failed."""
        if self.errors:
            raise PluginContractError([self])
        return self


class PluginContractError(KmsrError):
    """A backend breaks its contract; the message lists every error found."""

    def __init__(self, reports: list[BackendReport]):
        failed = [r for r in reports if r.errors]
        lines = [f"{r.kind[:-1]} {r.name!r} (plugin {r.plugin!r}): {f.check}: {f.message}" for r in failed for f in r.errors]
        super().__init__(f"{len(failed)} of {len(reports)} backends break the plugin contract: " + "; ".join(lines),
                         hint="docs/write-a-plugin.md says what each check expects")
        self.reports = reports


class _Stop(Exception):
    """Ends one backend's checks after a failure that the later checks depend on."""


class _Checker:
    """Collects findings for one backend; ``calling`` records exceptions from plugin code."""

    def __init__(self, backend, host, report: BackendReport, tmp: str, scales: list[int] | None = None):
        self.backend, self.host, self.report, self.tmp = backend, host, report, tmp
        self.info = backend.info
        self.scales = scales

    def add(self, check: str, level: str, message: str) -> None:
        self.report.findings.append(Finding(check, level, message))

    def ok(self, check: str, message: str) -> None:
        self.add(check, OK, message)

    def warn(self, check: str, message: str) -> None:
        self.add(check, WARNING, message)

    def error(self, check: str, message: str, *, stop: bool = False) -> None:
        self.add(check, ERROR, message)
        if stop:
            raise _Stop

    def expect(self, cond: bool, check: str, good: str, bad: str, *, stop: bool = False) -> bool:
        if cond:
            self.ok(check, good)
        else:
            self.error(check, bad, stop=stop)
        return bool(cond)

    @contextmanager
    def calling(self, check: str, what: str) -> Iterator[None]:
        """Run plugin code; an exception it raises becomes an error finding and ends the checks."""
        try:
            yield
        except _Stop:
            raise
        except Exception as exc:  # noqa: BLE001 - plugin code: whatever it raises is the finding, with its type and message
            self.error(check, f"{what} raised {type(exc).__name__}: {exc}", stop=True)

    def build(self, check: str, **keywords):
        shown = ", ".join(f"{k}={_short(v)}" for k, v in keywords.items())
        with self.calling(check, f"factory({shown})"):
            obj = self.backend.create(**keywords)
        self.ok(check, f"factory({shown}) built a {type(obj).__name__}")
        return obj


def _short(value) -> str:
    if isinstance(value, np.ndarray):
        return f"<array {value.shape}>"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# --------------------------------------------------------------------------- public entry points


def normalise_kind(kind: str) -> str:
    """``backbone`` or ``backbones`` -> ``backbones``; anything else is a :class:`KmsrError`."""
    k = kind if kind in KINDS else f"{kind}s"
    if k not in KINDS:
        raise KmsrError(f"unknown backend kind {kind!r}; expected one of {', '.join(KINDS)}")
    return k


def check_backend(kind: str, name: str, *, host=None, scales: list[int] | None = None) -> BackendReport:
    """Check the registered backend ``name`` of ``kind`` against its contract; returns the report.

    :param host: a :class:`~kmsr_cli.plugin_host.PluginHost` (default: the process-wide one).
    :param scales: backbones only: the scales to check (default every declared one).
    """
    import tempfile

    from .plugin_host import get_host

    host = host or get_host()
    kind = normalise_kind(kind)
    backend = host.get(kind, name)
    report = BackendReport(kind, name, backend.plugin)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kmsr-check-") as tmp:
        c = _Checker(backend, host, report, tmp, scales)
        try:
            _check_registration(c)
            usable, reason = backend.availability()
            if not usable:
                c.add("available", SKIPPED, f"cannot run here ({reason}); only the registration was checked")
            else:
                _RUNTIME_CHECKS[kind](c)
        except _Stop:
            pass  # the finding that stopped the checks is in the report
    report.seconds = time.perf_counter() - t0
    return report


def assert_conforms(kind: str, name: str, *, host=None) -> BackendReport:
    """:func:`check_backend`, raising :class:`PluginContractError` on any error (for plugin tests)."""
    return check_backend(kind, name, host=host).raise_for_errors()


def targets(host, name: str, kind: str | None = None) -> list[tuple[str, str]]:
    """What ``--check NAME`` means: every backend called NAME (of ``kind`` when given), else
    every backend registered by the plugin (entry point) NAME."""
    kinds = [normalise_kind(kind)] if kind else list(KINDS)
    found = [(k, name) for k in kinds if name in host.registries[k]]
    if not found:
        found = [(k, n) for k in kinds for n in host.names(k) if host.registries[k][n].plugin == name]
    if not found:
        known = sorted({n for k in kinds for n in host.names(k)} | {p.name for p in host.plugins})
        raise KmsrError(f"no backend or plugin called {name!r}; installed: {', '.join(known) or 'none'}",
                       hint="kmsr plugins  (lists every installed backend)")
    return found


def check_all(host, pairs: list[tuple[str, str]], *,
              on_start: Callable[[str, str], None] | None = None) -> list[BackendReport]:
    """:func:`check_backend` for each (kind, name), in order."""
    reports = []
    for kind, name in pairs:
        if on_start:
            on_start(kind, name)
        reports.append(check_backend(kind, name, host=host))
    return reports


# --------------------------------------------------------------------------- registration


def accepts(factory, keyword: str) -> bool | None:
    """Whether ``factory`` takes ``keyword`` (True with ``**kwargs``); None when it cannot be told."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return None
    ok_kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return any(p.kind == inspect.Parameter.VAR_KEYWORD or (p.name == keyword and p.kind in ok_kinds) for p in params)


def _is_int(v, minimum: int) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= minimum


def _info_rules(kind: str) -> dict[str, tuple[Callable[[Any], bool], str, bool]]:
    """key -> (valid?, what is expected, required) for the documented keys of ``kind``."""
    from .kernelset import ORIGINS

    def one_of(*choices):
        return lambda v: v in choices

    def subset(*choices):
        return lambda v: isinstance(v, (list, tuple, str)) and all(x in choices for x in ([v] if isinstance(v, str) else v))

    options = (lambda v: isinstance(v, dict), "a dict of keyword defaults", False)
    rules = {
        "estimators": {"options": options},
        "generators": {"options": options, "origin": (one_of(*ORIGINS), f"one of {', '.join(ORIGINS)}", False),
                       "trainable": (lambda v: isinstance(v, bool), "True or False", False)},
        "backbones": {
            "options": options,
            "input": (one_of(*INPUT_KINDS), "'upsampled' or 'lr'", True),
            "channels": (one_of(*CHANNEL_KINDS), "'rgb' or 'y'", True),
            "scales": (lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and all(_is_int(s, 1) for s in v),
                       "a non-empty list of integers >= 1", True),
            "receptive_field": (lambda v: _is_int(v, 0), "an integer >= 0", False),
            "size_multiple": (lambda v: _is_int(v, 1), "an integer >= 1", False),
            "global_context": (lambda v: isinstance(v, bool), "True or False", False),
            "published_weights": (lambda v: v is None or isinstance(v, str), "a description of the file", False),
            "init_allowed": (lambda v: isinstance(v, bool), "True or False", False),
            "weights_licence": (lambda v: isinstance(v, str), "a string", False),
        },
        "degradations": {"options": options,
                         "needs_kernels": (lambda v: isinstance(v, bool), "True or False", False),
                         "inputs": (subset(*INPUT_KINDS), "a list of 'upsampled', 'lr'", False),
                         "channels": (subset(*CHANNEL_KINDS), "a list of 'rgb', 'y'", False)},
    }
    return rules[kind]


def _check_registration(c: _Checker) -> None:
    kind, info, factory = c.backend.kind, c.info, c.backend.factory
    if not c.backend.description:
        c.warn("registration.description", "no description: kmsr plugins shows an empty line")
    try:
        json.dumps(info)
    except (TypeError, ValueError) as exc:
        c.error("registration.info", f"info is not JSON-friendly ({exc}); kmsr plugins --json cannot print it")
    documented = hookspecs.INFO_KEYS[kind]
    for key in sorted(set(info) - set(documented)):
        near = difflib.get_close_matches(key, list(documented), n=1, cutoff=0.8)
        if near:
            c.warn("registration.info", f"info key {key!r} is not one kmsr reads; did you mean {near[0]!r}?")
    for key, (valid, expected, required) in _info_rules(kind).items():
        if key not in info:
            if required:
                c.error(f"registration.{key}", f"info must declare {key}= ({expected}); hookspecs.INFO_KEYS says why")
            continue
        c.expect(valid(info[key]), f"registration.{key}", f"{key}={_short(info[key])}",
                 f"{key}={info[key]!r}, expected {expected}")
    declared = info.get("options")
    if isinstance(declared, dict):
        refused = [k for k in declared if accepts(factory, k) is False]
        c.expect(not refused, "factory.options", "the factory takes every declared option",
                 f"declared options the factory does not take: {', '.join(refused)}")
    for keyword in _required_keywords(kind, info):
        if accepts(factory, keyword) is False:
            c.error("factory.keywords", f"the factory does not take {keyword}=, which kmsr passes "
                    f"({hookspecs.FACTORY_KEYWORDS[kind][keyword]})")
    if c.report.errors:
        raise _Stop


def _required_keywords(kind: str, info: dict) -> list[str]:
    if kind == "estimators":
        return ["kernel_size", "device"]
    if kind == "generators":
        return ["device", "width_mult", "output", "checkpoint"] if info.get("trainable") else []
    if kind == "backbones":
        return ["scale"] + (["weights"] if info.get("published_weights") is not None else [])
    return ["scale", "input", "channels"] + (["kernels"] if info.get("needs_kernels") else [])


def protocol_members(proto: type) -> list[str]:
    """The attributes and methods a ``typing.Protocol`` class lists (its own and inherited)."""
    names: set[str] = set()
    for klass in proto.__mro__:
        if klass is object or klass.__module__ == "typing":
            continue
        names.update(vars(klass).get("__annotations__", {}))
        names.update(k for k in vars(klass) if k == "__call__" or not k.startswith("_"))
    return sorted(names)


def _check_protocol(c: _Checker, obj, proto: type, check: str) -> None:
    missing = [m for m in protocol_members(proto) if not hasattr(obj, m)]
    c.expect(not missing, check, f"{type(obj).__name__} has every member of hookspecs.{proto.__name__}",
             f"{type(obj).__name__} lacks {', '.join(missing)} (hookspecs.{proto.__name__})", stop=True)


def _check_params(c: _Checker, obj, check: str) -> None:
    if not hasattr(obj, "params"):
        c.ok(check, "no params(): kmsr records the factory keywords as provenance")
        return
    with c.calling(check, "params()"):
        p = obj.params()
    try:
        json.dumps(p, sort_keys=True)
        fine = isinstance(p, dict)
    except (TypeError, ValueError):
        fine = False
    c.expect(fine, check, "params() is a JSON-friendly dict",
             f"params() returned {_short(p)}; kmsr writes it as JSON provenance, so it must be a JSON-friendly dict")


# --------------------------------------------------------------------------- kernels


def _check_kernels(c: _Checker, check: str, kernels, shape: tuple[int, ...], *, strict: bool) -> np.ndarray | None:
    """Shape and values of returned kernels. ``strict``: as a kernel set must hold them (generators);
    else as ``kmsr estimate`` accepts them (finite, positive sum; it clips and renormalises)."""
    from kmsr_ops.errors import KmsrInputError
    from kmsr_ops.kernels import validate_kernels

    k = np.asarray(kernels)
    if k.shape != shape:
        c.error(check, f"returned shape {k.shape}, expected {shape}", stop=True)
    if k.dtype.kind != "f":
        c.error(check, f"returned dtype {k.dtype}, expected floating point")
        return None
    stack = k.reshape((-1, *shape[-2:])).astype(np.float64)
    if strict:
        try:
            validate_kernels(stack, name="kernels", require_odd=True)
        except KmsrInputError as exc:
            c.error(check, f"{exc} (a kernel set must hold finite, non-negative kernels summing to 1)")
            return None
        c.ok(check, f"{shape} kernels, finite, non-negative, summing to 1")
        return stack
    sums = stack.sum(axis=(1, 2))
    if not np.isfinite(stack).all() or (sums <= 0).any():
        c.error(check, "a kernel is not finite or sums to <= 0: kmsr estimate would record the patch as failed")
        return None
    if (stack < -1e-6).any() or np.abs(sums - 1).max() > 1e-3:
        c.warn(check, f"kernels have negative entries or sums {sums.min():.4g}..{sums.max():.4g}; kmsr clips and "
                      "renormalises them, so the kernel set holds something else than the estimator said")
    else:
        c.ok(check, f"{shape} kernel, finite, non-negative, sum 1")
    return stack


def _textured_patch(seed: int, side: int = PATCH_SIDE, sigma: float = 1.2) -> np.ndarray:
    """A float32 (side, side) image in [0, 1]: random blocks blurred by a Gaussian (a blurry photo)."""
    from scipy.ndimage import convolve

    from kmsr_ops.kernels import gaussian_kernel

    rng = np.random.default_rng(seed)
    blocks = rng.random((side // 4, side // 4))
    sharp = np.kron(blocks, np.ones((4, 4)))
    return np.clip(convolve(sharp, gaussian_kernel(9, sigma), mode="reflect"), 0, 1).astype(np.float32)


def _check_estimator(c: _Checker) -> None:
    from kmsr_ops.errors import KmsrInputError

    k = CHECK_KERNEL_SIZE
    est = c.build("factory", kernel_size=k)
    _check_protocol(c, est, hookspecs.Estimator, "protocol")
    patch, other = _textured_patch(0), _textured_patch(1, sigma=2.0)
    with c.calling("estimate", "estimate(patch, kernel_size=9, rng=...)"):
        first = est.estimate(patch, kernel_size=k, rng=np.random.default_rng(7))
    first = _check_kernels(c, "estimate", first, (k, k), strict=False)
    with c.calling("estimate.seeded", "estimate(...) again"):
        again = np.asarray(est.estimate(patch, kernel_size=k, rng=np.random.default_rng(7)), dtype=np.float64)
    if first is not None:
        c.expect(np.allclose(first[0], again, rtol=1e-6, atol=1e-9), "estimate.seeded",
                 "the same patch and seed give the same kernel",
                 "the same patch and seed give another kernel: a resumed kmsr estimate would not reproduce its kernels")
    if hasattr(est, "estimate_batch"):
        with c.calling("estimate_batch", "estimate_batch(patches (2, H, W), kernel_size=9, rng=...)"):
            batch = est.estimate_batch(np.stack([patch, other]), kernel_size=k, rng=np.random.default_rng(7))
        batch = _check_kernels(c, "estimate_batch", batch, (2, k, k), strict=False)
        if batch is not None and first is not None:
            gap = float(np.abs(batch[0] - first[0]).max())
            if gap <= 1e-6:
                c.ok("estimate_batch", "its first kernel equals estimate() of the same patch")
            else:
                c.warn("estimate_batch", f"differs from estimate() of the same patch by {gap:.3g} (max abs); "
                                         "fine only if the estimator is random")
    else:
        c.ok("estimate_batch", "no estimate_batch (optional): patches are estimated one at a time")
    _check_params(c, est, "params")
    flat = np.full((PATCH_SIDE, PATCH_SIDE), 0.5, np.float32)
    try:
        est.estimate(flat, kernel_size=k, rng=np.random.default_rng(7))
        c.ok("estimate.flat", "a flat patch gives a result (kmsr estimate checks and records it)")
    except KmsrInputError as exc:
        c.ok("estimate.flat", f"a flat patch is refused with KmsrInputError ({exc}), which kmsr reports per patch")
    except Exception as exc:  # noqa: BLE001 - plugin code: any other exception stops a serial kmsr estimate run; reported
        c.error("estimate.flat", f"a flat patch raised {type(exc).__name__}: {exc}; raise "
                                 "kmsr_ops.errors.KmsrInputError for a patch you cannot use, or a serial run stops")


def _check_generator(c: _Checker) -> None:
    if c.info.get("trainable"):
        _check_trainable(c)
        return
    k = CHECK_KERNEL_SIZE
    gen = c.build("factory")
    _check_protocol(c, gen, hookspecs.KernelGenerator, "protocol")
    with c.calling("sample", "sample(4, size=9, rng=...)"):
        first = gen.sample(4, size=k, rng=np.random.default_rng(3))
    first = _check_kernels(c, "sample", first, (4, k, k), strict=True)
    with c.calling("sample.seeded", "sample(...) again"):
        again = np.asarray(gen.sample(4, size=k, rng=np.random.default_rng(3)), dtype=np.float64)
    if first is not None:
        c.expect(np.array_equal(first, again), "sample.seeded", "the same seed gives the same kernels",
                 "the same seed gives other kernels: kmsr pool synth --seed would not be reproducible")
    with c.calling("sample.size", "sample(2, size=15, rng=...)"):
        other = gen.sample(2, size=15, rng=np.random.default_rng(4))
    _check_kernels(c, "sample.size", other, (2, 15, 15), strict=True)
    _check_params(c, gen, "params")


# --------------------------------------------------------------------------- trainable generators


def _check_trainable(c: _Checker) -> None:
    import torch

    from .gan import TrainSettings

    defaults = TrainSettings()
    gan = c.build("factory.untrained", device="cpu", width_mult=defaults.width_mult, output=defaults.output)
    _check_protocol(c, gan, hookspecs.TrainableGenerator, "protocol")
    nn = torch.nn
    c.expect(isinstance(gan.generator, nn.Module) and isinstance(gan.critic, nn.Module), "networks",
             "generator and critic are torch modules", "generator and critic must be torch.nn.Module objects", stop=True)
    k, z_dim = gan.kernel_size, gan.latent_dim
    c.expect(_is_int(k, 3) and k % 2 == 1 and _is_int(z_dim, 1), "networks", f"kernel_size {k}, latent_dim {z_dim}",
             f"kernel_size must be an odd integer >= 3 and latent_dim an integer >= 1, found {k!r}, {z_dim!r}", stop=True)
    with c.calling("networks", "generator(z) and critic(kernels)"), torch.no_grad():
        fake = gan.generator(torch.randn(2, z_dim))
        score = gan.critic(fake * float(gan.critic_input_scale))
    c.expect(tuple(fake.shape) == (2, 1, k, k), "networks", f"generator maps (2, {z_dim}) to (2, 1, {k}, {k})",
             f"generator maps (2, {z_dim}) to {tuple(fake.shape)}, expected (2, 1, {k}, {k})", stop=True)
    c.expect(score.ndim >= 1 and score.shape[0] == 2, "networks", "critic gives a score per kernel",
             f"critic output has shape {tuple(score.shape)}; expected one score per kernel, (2,) or (2, 1)")
    with c.calling("architecture", "architecture() and state_tensors()"):
        arch, tensors = gan.architecture(), gan.state_tensors()
    c.expect(isinstance(arch, dict) and all(isinstance(a, str) and isinstance(b, str) for a, b in arch.items()),
             "architecture", "architecture() is str -> str (safetensors metadata)",
             f"architecture() must be a dict of str -> str (safetensors metadata), found {_short(arch)}")
    c.expect(isinstance(tensors, dict) and all(isinstance(v, torch.Tensor) for v in tensors.values()),
             "state_tensors", f"state_tensors() gives {len(tensors)} tensors",
             "state_tensors() must be a dict of name -> torch.Tensor", stop=True)
    with c.calling("draw", "draw(3, rng=...)"):
        drawn = gan.draw(3, rng=np.random.default_rng(0))
    _check_kernels(c, "draw", drawn, (3, k, k), strict=True)
    _check_gan_round_trip(c, k)


def _check_gan_round_trip(c: _Checker, k: int) -> None:
    """One iteration of ``kmsr gan train``, a resumed second one, then sampling from the checkpoint."""
    from pathlib import Path

    from kmsr_ops.kernels import gaussian_kernel

    from .gan import train_gan
    from .kernelset import Provenance, write_kernel_set

    tmp = Path(c.tmp)
    sigmas = np.linspace(0.8, 2.0, 8)
    prov = Provenance()
    for i in range(len(sigmas)):
        prov.append(origin="synthetic", source="plugin-check", method="gaussian", params={}, seed=0, index=i)
    kernels = write_kernel_set(tmp / "train.h5", np.stack([gaussian_kernel(k, s) for s in sigmas]), prov, scale=2)
    out = tmp / "gan.safetensors"
    settings = {"generator": c.backend.name, "batch": 4, "critic_steps": 1, "seed": 0}
    with c.calling("gan_train", "kmsr gan train (1 iteration)"):
        train_gan(c.host, [kernels], out, iters=1, settings=settings, device="cpu")
    with c.calling("gan_train.resume", "kmsr gan train --resume (to iteration 2)"):
        summary = train_gan(c.host, [kernels], out, iters=2, settings={"generator": c.backend.name}, device="cpu",
                            resume=True)
    c.expect(summary["iterations"] == 2 and summary["start_iteration"] == 1, "gan_train.resume",
             "trains, saves and resumes through kmsr gan train",
             f"resume went from {summary['start_iteration']} to {summary['iterations']}, expected 1 to 2")
    loaded = c.build("factory.checkpoint", checkpoint=out, device="cpu")
    meta = getattr(loaded, "metadata", None)
    c.expect(isinstance(meta, dict) and meta.get("iteration") == "2" and loaded.scale == 2, "checkpoint",
             "the checkpoint's metadata and scale come back",
             f"built from the checkpoint: metadata iteration {_short((meta or {}).get('iteration'))} and scale "
             f"{_short(getattr(loaded, 'scale', None))}, expected '2' and 2 (kmsr gan train --resume and pool build read them)")
    with c.calling("checkpoint.sample", "sample(4, size=kernel_size, rng=...)"):
        a = loaded.sample(4, size=k, rng=np.random.default_rng(5))
        b = loaded.sample(4, size=k, rng=np.random.default_rng(5))
    if _check_kernels(c, "checkpoint.sample", a, (4, k, k), strict=True) is not None:
        c.expect(np.array_equal(np.asarray(a), np.asarray(b)), "checkpoint.sample", "the same seed gives the same kernels",
                 "the same seed gives other kernels: sampled pools would not be reproducible")
    _check_params(c, loaded, "checkpoint.params")


# --------------------------------------------------------------------------- backbones


def _check_backbone(c: _Checker) -> None:
    declared = list(c.info["scales"])
    todo = list(c.scales or declared)
    unknown = [s for s in todo if s not in declared]
    if unknown:
        raise KmsrError(f"backbone {c.backend.name!r} declares scales {declared}; cannot check x{unknown[0]}")
    for i, s in enumerate(todo):
        module = c.build(f"x{s}.factory", scale=s)
        conv = _check_module(c, module, s)
        _check_forward(c, module, conv, s)
        if i == 0:
            _check_gradient(c, module, conv, s)
            _check_checkpoint(c, module, conv, s)
            _check_receptive_field(c, module, conv, s)


def _check_module(c: _Checker, module, s: int):
    from torch import nn

    from .models import backbone_convention

    c.expect(isinstance(module, nn.Module), f"x{s}.module", "a torch.nn.Module",
             f"the factory returned a {type(module).__name__}, expected a torch.nn.Module", stop=True)
    _check_protocol(c, module, hookspecs.Backbone, f"x{s}.protocol")
    try:
        conv = backbone_convention(c.backend, module, scale=s)
    except KmsrError as exc:
        c.error(f"x{s}.convention", str(exc), stop=True)
    attr = getattr(module, "scale", None)
    if _is_int(attr, 1) and attr != s:
        c.error(f"x{s}.convention", f"the module says scale={attr} when built with scale={s}: kmsr sr refuses it")
    opts = getattr(module, "options", None)
    if opts is not None:
        try:
            json.dumps(opts)
            fine = isinstance(opts, dict)
        except (TypeError, ValueError):
            fine = False
        c.expect(fine, f"x{s}.options", "module.options is a JSON-friendly dict (checkpoints record it)",
                 f"module.options is {_short(opts)}; checkpoints record it as JSON, so it must be a JSON-friendly dict")
    c.ok(f"x{s}.convention", f"input={conv.input}, channels={conv.channels}, receptive_field={conv.receptive_field}, "
                             f"size_multiple={conv.size_multiple}")
    return conv


def _probe_input(conv, s: int, lr_side: tuple[int, int]):
    """A random network input: LR-sized for ``lr`` backbones, HR-sized for ``upsampled``, on the size multiple."""
    import torch

    m = conv.size_multiple
    h, w = (lr_side[0], lr_side[1]) if conv.input == "lr" else (lr_side[0] * s, lr_side[1] * s)
    h, w = -(-h // m) * m, -(-w // m) * m
    gen = torch.Generator().manual_seed(11)
    return torch.rand(1, 3 if conv.channels == "rgb" else 1, h, w, generator=gen)


def _check_forward(c: _Checker, module, conv, s: int) -> None:
    import torch

    x = _probe_input(conv, s, (10, 13))
    want = (1, x.shape[1], x.shape[2] * s, x.shape[3] * s) if conv.input == "lr" else tuple(x.shape)
    module.eval()
    with c.calling(f"x{s}.forward", f"module(x {tuple(x.shape)})"), torch.no_grad():
        y = module(x)
    c.expect(isinstance(y, torch.Tensor), f"x{s}.forward", "returns a tensor", f"returned a {type(y).__name__}", stop=True)
    c.expect(tuple(y.shape) == want, f"x{s}.forward", f"{tuple(x.shape)} -> {tuple(y.shape)}",
             f"{tuple(x.shape)} -> {tuple(y.shape)}, expected {want} for input={conv.input!r}, "
             f"channels={conv.channels!r} at x{s}", stop=True)
    c.expect(y.dtype == x.dtype and bool(torch.isfinite(y).all()), f"x{s}.forward", "float32 in, finite float32 out",
             f"float32 in, {y.dtype} out{'' if bool(torch.isfinite(y).all()) else ' with non-finite values'}")


def _check_gradient(c: _Checker, module, conv, s: int) -> None:
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        c.error(f"x{s}.train", "the module has no trainable parameters: kmsr train would have nothing to optimise")
        return
    x = _probe_input(conv, s, (10, 13))
    module.train()
    with c.calling(f"x{s}.train", "a training step (forward, backward)"):
        module(x).mean().backward()
    got = [p for p in params if p.grad is not None and bool(p.grad.abs().sum() > 0)]
    module.zero_grad(set_to_none=True)
    module.eval()
    c.expect(bool(got), f"x{s}.train", f"{len(got)} of {len(params)} parameter tensors get gradients",
             "no parameter gets a gradient: kmsr train would not change the network")


def _check_checkpoint(c: _Checker, module, conv, s: int) -> None:
    """Save as ``kmsr train`` does, load as ``kmsr sr`` does, and compare the outputs."""
    from pathlib import Path

    import torch

    from .checkpoint import load_model, save_model

    own = getattr(module, "options", None)
    options = dict(own) if isinstance(own, dict) else dict(c.info.get("options") or {})
    path = Path(c.tmp) / "model.safetensors"
    with c.calling(f"x{s}.checkpoint", "saving a checkpoint"):
        save_model(path, module, backbone=c.backend.name, scale=s, options=options)
    with c.calling(f"x{s}.checkpoint", f"loading it (factory(scale={s}, **{_short(options)}), strict state_dict)"):
        loaded, _ = load_model(path, host=c.host)
    x = _probe_input(conv, s, (10, 13))
    with torch.no_grad():
        same = torch.allclose(module.eval()(x), loaded(x), rtol=1e-5, atol=1e-6)
    c.expect(same, f"x{s}.checkpoint", "a saved checkpoint loads and gives the same output",
             "the reloaded checkpoint gives another output: the factory rebuilds another network from the recorded options")


def _influence_extent(module, x) -> tuple[int, int]:
    """Rows and columns of ``x`` with a non-zero gradient of the centre output pixel: the input
    window that one output pixel depends on."""
    x = x.clone().requires_grad_(True)
    y = module(x)
    y[0, :, y.shape[2] // 2, y.shape[3] // 2].sum().backward()
    mask = (x.grad.abs().sum(dim=(0, 1)) > 0).cpu().numpy()
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return 0, 0
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def _check_receptive_field(c: _Checker, module, conv, s: int) -> None:
    import copy

    check = f"x{s}.receptive_field"
    if conv.global_context:
        c.ok(check, "global_context: every output pixel sees the whole input, tiles are approximate (not probed)")
        return
    rf = conv.receptive_field
    if rf == 0:
        c.warn(check, "no receptive_field declared: kmsr sr tiles with a 16-pixel margin and cannot promise exact tiles")
        return
    side = rf + 6  # wider than the declared window, so a larger true one shows
    x = _probe_input(conv, s, (side, side + 2)) if conv.input == "lr" else _probe_input(conv, 1, (side, side + 2))
    module.eval()
    with c.calling(check, "probing the receptive field"):
        extent = _influence_extent(module, x)
        if max(extent) > rf:  # float32 rounding could add stray non-zeros: confirm in float64
            extent = _influence_extent(copy.deepcopy(module).double(), x.double())
    module.zero_grad(set_to_none=True)
    c.expect(max(extent) <= rf, check, f"one output pixel depends on {extent[0]}x{extent[1]} input pixels, "
             f"within the declared {rf}",
             f"one output pixel depends on {extent[0]}x{extent[1]} input pixels, more than the declared "
             f"receptive_field {rf}: kmsr sr's tiles would not match the untiled output")


# --------------------------------------------------------------------------- degradations


def _degradation_combos(info: dict) -> list[tuple[str, str]]:
    def listed(key, default):
        v = info.get(key, default)
        return [v] if isinstance(v, str) else list(v)

    return [(i, ch) for i in listed("inputs", INPUT_KINDS) for ch in listed("channels", CHANNEL_KINDS)]


def _pool_kernels(width: float) -> np.ndarray:
    from kmsr_ops.kernels import gaussian_kernel

    return np.stack([gaussian_kernel(CHECK_KERNEL_SIZE, width * (1 + 0.1 * i)) for i in range(6)]).astype(np.float32)


def _check_degradation(c: _Checker) -> None:
    combos = _degradation_combos(c.info)
    for n, (inp, ch) in enumerate(combos):
        for s in (2, 3) if n == 0 else (2,):
            _check_degradation_once(c, inp, ch, s)
    if c.info.get("needs_kernels"):
        _check_kernels_used(c, *combos[0])


def _degrade_twice(dg, hr, seed: int):
    """Two calls with equal ``torch.Generator`` seeds and different global seeds."""
    import torch

    out = []
    with torch.random.fork_rng(devices=[]):
        for global_seed in (1, 2):
            torch.manual_seed(global_seed)
            out.append(dg(hr, torch.Generator().manual_seed(seed)))
    return out


def _hr_batch(dg, s: int):
    import math

    import torch

    m = getattr(dg, "hr_multiple", s)
    if not _is_int(m, 1):
        raise KmsrError(f"hr_multiple is {m!r}, expected an integer >= 1")
    step = math.lcm(int(m), s)
    h, w = step * -(-24 // step), step * -(-30 // step)
    return torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(0))


def _check_degradation_once(c: _Checker, inp: str, ch: str, s: int) -> None:
    import torch

    tag = f"{inp}/{ch}/x{s}"
    extra = {"kernels": _pool_kernels(1.0)} if c.info.get("needs_kernels") else {}
    dg = c.build(f"{tag}.factory", scale=s, input=inp, channels=ch, **extra)
    _check_protocol(c, dg, hookspecs.Degradation, f"{tag}.protocol")
    with c.calling(f"{tag}.call", "degrade(hr, generator) twice"):
        hr = _hr_batch(dg, s)
        (x, y), (x2, y2) = _degrade_twice(dg, hr, seed=5)
    c.expect(isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor), f"{tag}.call", "returns (x, y) tensors",
             f"returned {type(x).__name__}, {type(y).__name__}; expected two torch tensors", stop=True)
    b, _, h, w = hr.shape
    cc = 3 if ch == "rgb" else 1
    want_x = (b, cc, h // s, w // s) if inp == "lr" else (b, cc, h, w)
    c.expect(tuple(x.shape) == want_x and tuple(y.shape) == (b, cc, h, w), f"{tag}.shapes",
             f"hr {tuple(hr.shape)} -> x {tuple(x.shape)}, y {tuple(y.shape)}",
             f"hr {tuple(hr.shape)} -> x {tuple(x.shape)}, y {tuple(y.shape)}; expected x {want_x}, y {(b, cc, h, w)}")
    c.expect(x.dtype == hr.dtype == y.dtype and x.device == hr.device, f"{tag}.dtype", "x and y keep hr's dtype and device",
             f"hr is {hr.dtype}, x {x.dtype}, y {y.dtype}: the network (float32) would get another dtype")
    finite = bool(torch.isfinite(x).all() and torch.isfinite(y).all())
    c.expect(finite, f"{tag}.values", "finite values", "non-finite values in x or y")
    if finite and (float(x.min()) < -0.5 or float(x.max()) > 1.5):
        c.warn(f"{tag}.values", f"x spans {float(x.min()):.3g}..{float(x.max()):.3g}, far outside [0, 1]")
    same = x.shape == x2.shape and torch.equal(x, x2) and torch.equal(y, y2)
    c.expect(same, f"{tag}.generator", "every random draw comes from the generator (equal seeds, equal batches)",
             "equal generator seeds gave different batches: it draws from torch's global RNG or elsewhere, "
             "so kmsr train --resume would not continue exactly")


def _check_kernels_used(c: _Checker, inp: str, ch: str) -> None:
    import torch

    outs = []
    for width in (0.3, 2.0):
        dg = c.build(f"{inp}/{ch}/x2.kernels", scale=2, input=inp, channels=ch, kernels=_pool_kernels(width))
        with c.calling(f"{inp}/{ch}/x2.kernels", "degrade(hr, generator)"):
            outs.append(dg(_hr_batch(dg, 2), torch.Generator().manual_seed(5))[0])
    c.expect(not torch.equal(outs[0], outs[1]), f"{inp}/{ch}/x2.kernels", "narrow and wide pool kernels give different inputs",
             "narrow and wide pool kernels give the same network input: kernels= seems unused")


_RUNTIME_CHECKS: dict[str, Callable[..., None]] = {
    "estimators": _check_estimator,
    "generators": _check_generator,
    "backbones": _check_backbone,
    "degradations": _check_degradation,
}
