"""Settings: plain dataclasses filled from TOML, with errors that name the file and the key.

Each stage owns its settings dataclass (``trainer.config``, ``generator.config``, ``judge.config``); this module
only knows how to read TOML, apply ``--set section.key=value`` overrides and fill a dataclass strictly (an
unknown or mistyped key is an error, not a silent default).

Fields are declared with ``setting(default, help, runtime=...)``. The help text is what ``--help`` shows
(``prefloop.flags`` makes every command's flags from these fields), and ``runtime=True`` marks a setting that does
not change what a stage writes (speed, retries, console, where files go: paths whose contents are fingerprinted
as inputs). ``fingerprinted(cfg)`` is every other field: what a stage's fingerprint is made of, so a new field
reruns the stage when it changes unless it is marked, and nobody keeps a list by hand.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

T = TypeVar("T")
_MISSING: Any = dataclasses.MISSING

# Every section a prefloop TOML file may hold: each command reads its own and refuses the rest of what it does
# not know, so a typo (``[trian]``) is an error and not a section silently ignored.
SECTIONS = ("run", "data", "generate", "split", "preflight", "train", "export", "judge", "rounds")


class ConfigError(ValueError):
    """A bad setting, named by file and key."""


def load_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` strings; the value is parsed as TOML/JSON when it can be, else kept as text."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value")
        value: Any
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: '{part}' is not a section")
        node[parts[-1]] = value
    return data


def _check_type(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            try:
                return _check_type(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} is not a valid {hint}")
    if hint is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected nothing, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(hint)
        inner = args[0] if args else Any
        items = [_check_type(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return value
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return build(hint, value, where)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if isinstance(hint, type) and not isinstance(value, hint):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


def check_sections(doc: dict[str, Any], path: str | Path) -> None:
    """Refuse a section no command reads (a typo) and a section that is not a table."""
    unknown = sorted(set(doc) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) [{'], ['.join(unknown)}]; known: {', '.join(SECTIONS)}")
    for name in SECTIONS:
        if not isinstance(doc.get(name, {}), dict):
            raise ConfigError(f"{path}: [{name}] must be a table")


def _renamed(cls: type, data: dict[str, Any], where: str) -> dict[str, Any]:
    """Keys renamed in this release (a field's ``was``) are read under their new name, with a note on stderr."""
    for f in dataclasses.fields(cls):
        for old in f.metadata.get("was") or ():
            if old in data:
                if f.name in data:
                    raise ConfigError(f"{where}: both {old} and {f.name} are set; {old} is the old name of {f.name}")
                data[f.name] = data.pop(old)
                print(f"note: {where}.{old} is now called {f.name}; the old name is read for one more release",
                      file=sys.stderr)
    return data


def build(cls: type[T], data: dict[str, Any] | None, where: str) -> T:
    """Fill dataclass ``cls`` from ``data``; ``where`` (e.g. ``run.toml [train]``) prefixes every error."""
    data = _renamed(cls, dict(data or {}), where)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    kwargs = {k: _check_type(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def setting(default: Any = _MISSING, help: str = "", *, factory: Any = None, runtime: bool = False,
            flag: str | bool = True, short: str | None = None, choices: tuple[Any, ...] | None = None,
            aliases: tuple[str, ...] = (), was: tuple[str, ...] = (), metavar: str | None = None) -> Any:
    """A settings field: its default, its help text, and whether it changes outputs.

    ``flag``: the command-line flag (default ``--field-name``; ``False``: no flag, TOML and ``--set`` only).
    ``aliases``: older flag spellings still accepted (hidden from ``--help``); ``was``: older TOML key names,
    read with a note. ``choices`` are checked by argparse and by ``check_choices``.
    """
    meta = {"help": help, "runtime": runtime, "flag": flag, "short": short, "choices": choices,
            "aliases": aliases, "was": was, "metavar": metavar}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def is_runtime(f: dataclasses.Field) -> bool:
    """Marked ``runtime=True``: does not change what the stage writes, so it stays out of fingerprints."""
    return bool(f.metadata.get("runtime"))


def fingerprinted(cfg: Any, *, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """The settings of ``cfg`` that decide a stage's outputs: every field not marked ``runtime``."""
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
            if not is_runtime(f) and f.name not in exclude}


def check_choices(cfg: Any, where: str = "") -> None:
    """Refuse a value outside a field's ``choices``, naming the key and the allowed values."""
    for f in dataclasses.fields(cfg):
        allowed = f.metadata.get("choices")
        value = getattr(cfg, f.name)
        if allowed and value not in allowed:
            raise ConfigError(f"{where}{f.name}: {value!r} is not one of {', '.join(map(str, allowed))}")


def at_least(cfg: Any, where: str, minimum: float, *names: str) -> None:
    """Refuse a setting below ``minimum`` (a negative token budget, a zero timeout), naming the key."""
    for name in names:
        value = getattr(cfg, name)
        if value is not None and value < minimum:
            raise ConfigError(f"{where}{name}: must be at least {minimum:g}, got {value}")


def to_dict(obj: Any) -> dict[str, Any]:
    """A settings dataclass as a plain dict (for fingerprints and run records)."""
    return dataclasses.asdict(obj)


def load_section(cls: type[T], section: str, path: str | Path | None = None, overrides: list[str] | None = None,
                 flags: dict[str, Any] | None = None) -> T:
    """One stage's settings as every command reads them: the TOML file's ``[section]``, then the command-line
    flags that were given (``None`` means not given), then ``--set key=value`` (``key`` or ``section.key``).

    Errors name the file and section, e.g. ``run.toml [train].beta: expected float``.
    """
    data: dict[str, Any] = {}
    where = f"[{section}]"
    if path is not None:
        doc = load_toml(path)
        check_sections(doc, path)
        table = doc.get(section, {})
        where = f"{path} [{section}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [{section}] must be a table")
        data.update(table)
    data.update({k: v for k, v in (flags or {}).items() if v is not None})
    prefixed = [o if o.startswith(f"{section}.") else f"{section}.{o}" for o in overrides or []]
    data = apply_overrides({section: data}, prefixed)[section]
    return build(cls, data, where)
