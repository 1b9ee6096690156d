"""The plugin host: loads every ``kmsr`` entry point into one pluggy manager and keeps the
registry of backends they provide.

Built-in plugins (``plugins/kmsr_*``) are ordinary entry points of this distribution, so they
travel the same path as third-party ones. Environment switches, for debugging:

- ``KMSR_PLUGINS=a,b``: load only these entry points (an allow-list);
- ``KMSR_DISABLE_PLUGINS=a,b``: skip these entry points.

A plugin that fails to import or to register is reported (``kmsr plugins`` shows the error)
and does not take the others down. What a backend must be is in :mod:`kmsr_cli.hookspecs`;
:mod:`kmsr_cli.plugin_check` checks one against it (``docs/write-a-plugin.md``).
"""

from __future__ import annotations

import importlib.metadata as md
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from kmsr_ops.errors import KmsrError

from . import hookspecs

ALLOW_ENV = "KMSR_PLUGINS"
DENY_ENV = "KMSR_DISABLE_PLUGINS"


@dataclass
class Backend:
    """One registered backend: an estimator, generator, backbone or degradation."""

    kind: str
    name: str
    factory: Callable[..., Any]
    plugin: str
    description: str = ""
    available: Callable[[], Any] | None = None
    info: dict = field(default_factory=dict)

    def availability(self) -> tuple[bool, str]:
        """(usable here, reason when not)."""
        if self.available is None:
            return True, ""
        try:
            res = self.available()
        except Exception as exc:  # noqa: BLE001 - a broken check says the backend cannot be used, and why
            return False, f"availability check failed: {type(exc).__name__}: {exc}"
        if isinstance(res, tuple):
            return bool(res[0]), str(res[1]) if len(res) > 1 else ""
        if hasattr(res, "ok"):
            return bool(res.ok), str(getattr(res, "reason", ""))
        return bool(res), "" if res else "not available"

    def create(self, **options):
        ok, reason = self.availability()
        if not ok:
            raise KmsrError(f"{self.kind[:-1]} {self.name!r} cannot run here: {reason}")
        return self.factory(**options)

    def describe(self) -> dict:
        ok, reason = self.availability()
        return {
            "name": self.name,
            "plugin": self.plugin,
            "description": self.description,
            "usable": ok,
            "reason": reason,
            "info": self.info,
        }


@dataclass
class PluginRecord:
    name: str
    module: str
    distribution: str | None
    version: str | None
    error: str | None = None


def _env_list(name: str) -> set[str] | None:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return None
    return {p.strip() for p in raw.split(",") if p.strip()}


class PluginHost:
    """A pluggy manager plus the registries filled through the registration hooks."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: list[PluginRecord] = []
        self.registries: dict[str, dict[str, Backend]] = {k: {} for k in hookspecs.HOOK_KINDS}
        self.errors: list[str] = []

    # ------------------------------------------------------------------ loading
    def load_entry_points(self, group: str = hookspecs.ENTRY_POINT_GROUP) -> None:
        allow = _env_list(ALLOW_ENV)
        deny = _env_list(DENY_ENV) or set()
        for ep in sorted(md.entry_points(group=group), key=lambda e: e.name):
            if (allow is not None and ep.name not in allow) or ep.name in deny:
                continue
            if self.pm.has_plugin(ep.name):
                continue
            dist = getattr(ep, "dist", None)
            rec = PluginRecord(
                name=ep.name,
                module=ep.value,
                distribution=dist.metadata["Name"] if dist is not None else None,
                version=dist.version if dist is not None else None,
            )
            try:
                obj = ep.load()
                self.pm.register(obj, name=ep.name)
            except Exception as exc:  # noqa: BLE001 - one broken plugin must not break the CLI; it is reported
                rec.error = f"failed to load: {type(exc).__name__}: {exc}"
                self.errors.append(f"plugin {ep.name!r} ({ep.value}) {rec.error}")
            self.plugins.append(rec)

    def register_plugin(self, obj, name: str) -> None:
        """Register an in-process plugin object (used by tests and embedding applications)."""
        self.pm.register(obj, name=name)
        self.plugins.append(PluginRecord(name=name, module=getattr(obj, "__name__", repr(obj)), distribution=None, version=None))

    def check(self) -> None:
        """Fail on hook implementations that match no hookspec (misspelt hook names)."""
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise KmsrError(f"a plugin implements an unknown hook: {exc}") from exc

    def collect(self) -> None:
        """Call every registration hook, once per plugin, recording who registered what."""
        for kind, hook_name in hookspecs.HOOK_KINDS.items():
            caller = getattr(self.pm.hook, hook_name)
            for impl in caller.get_hookimpls():
                register = self._make_register(kind, impl.plugin_name)
                try:
                    impl.function(register=register)
                except Exception as exc:  # noqa: BLE001 - reported per plugin, the others still register
                    msg = f"plugin {impl.plugin_name!r} failed in {hook_name}: {type(exc).__name__}: {exc}"
                    self.errors.append(msg)
                    for rec in self.plugins:
                        if rec.name == impl.plugin_name and rec.error is None:
                            rec.error = msg
                    if os.environ.get("KMSR_DEBUG"):
                        traceback.print_exc()

    def _make_register(self, kind: str, plugin_name: str):
        registry = self.registries[kind]

        def register(name: str, factory: Callable[..., Any], *, description: str = "", available=None, **info):
            if not isinstance(name, str) or not name:
                raise ValueError(f"{kind[:-1]} names must be non-empty strings, got {name!r}")
            if not callable(factory):
                raise TypeError(f"{kind[:-1]} {name!r}: factory must be callable, got {type(factory).__name__}")
            if name in registry:
                other = registry[name].plugin
                raise ValueError(f"{kind[:-1]} {name!r} is already registered by plugin {other!r}")
            registry[name] = Backend(kind, name, factory, plugin_name, description, available, dict(info))

        return register

    # ------------------------------------------------------------------ lookup
    def get(self, kind: str, name: str) -> Backend:
        registry = self.registries[kind]
        if name not in registry:
            known = ", ".join(sorted(registry)) or "none installed"
            raise KmsrError(
                f"unknown {kind[:-1]} {name!r}; installed {kind}: {known}",
                hint="kmsr plugins  (lists every installed backend and whether it can run here)",
            )
        return registry[name]

    def names(self, kind: str) -> list[str]:
        return sorted(self.registries[kind])

    def describe(self) -> dict:
        """What ``kmsr plugins --json`` prints: the contracts' ``api_version``, every plugin, every backend."""
        out: dict[str, Any] = {
            "api_version": hookspecs.API_VERSION,
            "plugins": [
                {
                    "name": r.name,
                    "module": r.module,
                    "distribution": r.distribution,
                    "version": r.version,
                    "ok": r.error is None,
                    "error": r.error,
                }
                for r in self.plugins
            ]
        }
        for kind, reg in self.registries.items():
            out[kind] = [reg[n].describe() for n in sorted(reg)]
        return out


_HOST: PluginHost | None = None


def get_host(*, reload: bool = False) -> PluginHost:
    """The process-wide host, loaded on first use (entry points, check_pending, registration)."""
    global _HOST
    if _HOST is None or reload:
        host = PluginHost()
        host.load_entry_points()
        host.check()
        host.collect()
        _HOST = host
    return _HOST
