"""Every command's flags, made one way: from the fields of its settings dataclass.

A field declared with ``prefloop.config.setting`` becomes ``--field-name`` (or the flag it names), typed from the
field's annotation, with its help text and choices. Booleans get ``--name`` / ``--no-name``; lists take several
values (``--judge a --judge b``, or ``--models a,b``). A flag that was not given is ``None``, so the precedence
rule of ``prefloop.config.load_section`` (TOML, then flags, then ``--set``) holds for every command.

Every command also takes ``--config FILE.toml`` (its own section is read), ``--set KEY=VALUE`` (repeatable; ``KEY``
or ``SECTION.KEY``) and ``-q/--quiet``.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any


def _base_type(hint: Any) -> tuple[Any, bool]:
    """``(scalar type, is_list)`` of a field annotation (``int | None`` -> int, ``list[str]`` -> str, True)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _base_type(args[0]) if args else (str, False)
    if origin in (list, tuple):
        args = typing.get_args(hint)
        return (args[0] if args else str), True
    return hint, False


class _Extend(argparse.Action):
    """Repeatable list flag; each value may itself be comma-separated."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        items = list(getattr(namespace, self.dest, None) or [])
        items += [v.strip() for v in str(values).split(",") if v.strip()]
        setattr(namespace, self.dest, items)


def flag_name(f: dataclasses.Field) -> str | None:
    flag = f.metadata.get("flag", True)
    if flag is False:
        return None
    return flag if isinstance(flag, str) else "--" + f.name.replace("_", "-")


def add_config_flags(parser: argparse.ArgumentParser, cls: type, *, skip: tuple[str, ...] = ()) -> None:
    """One flag per field of ``cls`` that has one (see the module docstring)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        name = flag_name(f)
        if name is None or f.name in skip or f.name == "quiet":  # quiet comes with add_common
            continue
        meta = f.metadata
        names = [name] + ([meta["short"]] if meta.get("short") else [])
        kind, is_list = _base_type(hints[f.name])
        kwargs: dict[str, Any] = {"dest": f.name, "default": None, "help": meta.get("help") or None}
        if meta.get("metavar"):
            kwargs["metavar"] = meta["metavar"]
        if kind is bool and not is_list:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif is_list:
            kwargs["action"] = _Extend
        elif kind in (int, float, str):
            kwargs["type"] = kind
            if meta.get("choices"):
                kwargs["choices"] = list(meta["choices"])
        else:  # tables (dict) have no flag form: TOML or --set only
            continue
        parser.add_argument(*names, **kwargs)
        for alias in meta.get("aliases") or ():
            parser.add_argument(alias, **{**kwargs, "help": argparse.SUPPRESS})


def add_common(parser: argparse.ArgumentParser, section: str) -> None:
    """``--config``, ``--set`` and ``--quiet``, the same in every command."""
    parser.add_argument("--config", metavar="FILE.toml", help=f"TOML file; its [{section}] section is read")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override one setting (KEY or {section}.KEY), after the file and the flags; "
                             "repeatable")
    parser.add_argument("-q", "--quiet", action="store_true", default=None, help="no progress output")


def given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The flags that were given, by field name (``None`` ones left out), ready for ``load_section``."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
            if getattr(args, f.name, None) is not None}


def settings(args: argparse.Namespace, cls: type, section: str, **also: Any) -> Any:
    """The command's settings: ``--config``'s ``[section]``, then the flags given (and ``also``), then
    ``--set`` (``prefloop.config.load_section``)."""
    from prefloop.config import load_section

    flags = {**given(args, cls), **{k: v for k, v in also.items() if v is not None}}
    return load_section(cls, section, args.config, args.overrides, flags)


def fail(message: object, code: int = 2) -> int:
    """Print ``error: message`` on stderr (also under ``--quiet``: an error is never progress) and return
    ``code``, the command's exit status."""
    import sys

    print(f"error: {message}", file=sys.stderr)
    return code
