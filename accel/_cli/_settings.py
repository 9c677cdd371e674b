"""Every subcommand's options: flag > environment > config file > built-in default.

One generic rule, so no command has to wire its options to the config file by hand (and
a new option of ``serve`` or ``node`` is configurable the day it is added): the parser
of a subcommand parses with every option's default replaced by a marker, so that after
parsing it knows exactly which options were given; each one that was not takes its
environment variable or config-file value (:func:`accel.config.option_setting`),
converted and checked by the option's own ``type`` and ``choices``, else its built-in
default. Required options (``serve --root``) may come from a config file too.

Where each value came from is kept on the namespace (``args.config_sources``) for
``accel config``. Reads the config files only for the command being run, and only
after its arguments parsed (``accel serve --help`` works with a broken file).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from accel.config import Setting, Value, config_files, load_files, option_setting
from accel.errors import AccelError, ConfigError

__all__ = ["Prepared", "configurable", "fill", "prepare", "resolve_options", "restore"]


class _Unset:
    """The default of every configurable option while its parser runs."""

    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Any = _Unset()


class _UnsetList(list[Any]):
    """The default of an ``append`` option while parsing: it appends to a copy of its
    default, so "not given" is "still this very object"."""


# Actions whose value a file can give: store, store_true/false, append. (count, help,
# version, store_const and custom actions are left alone.)
_KINDS = (
    argparse._StoreAction,
    argparse._StoreTrueAction,
    argparse._StoreFalseAction,
    argparse._AppendAction,
)


def configurable(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The options of ``parser`` a config file or an environment variable may set."""
    return [
        a
        for a in parser._actions
        if a.option_strings and type(a) in _KINDS and a.help is not argparse.SUPPRESS
    ]


@dataclass
class Prepared:
    """What :func:`prepare` changed, for :func:`fill` to put back: each option's default
    and required flag, and the required groups of options (``--root`` or ``--store``)."""

    actions: dict[argparse.Action, tuple[Any, bool]] = field(default_factory=dict)
    groups: list[Any] = field(default_factory=list)


def prepare(parser: argparse.ArgumentParser) -> Prepared:
    """Put markers in place of the defaults and make required options optional (a file
    may give them); :func:`fill` restores both."""
    saved = Prepared()
    for action in configurable(parser):
        saved.actions[action] = (action.default, action.required)
        if isinstance(action, argparse._AppendAction):
            action.default = _UnsetList(action.default or [])
        else:
            action.default = _UNSET
        action.required = False
    for group in parser._mutually_exclusive_groups:
        if group.required:
            group.required = False
            saved.groups.append(group)
    return saved


def restore(saved: Prepared) -> None:
    """Put the parser's defaults and required flags back as they were."""
    for action, (default, required) in saved.actions.items():
        action.default, action.required = default, required
    for group in saved.groups:
        group.required = True


def fill(
    parser: argparse.ArgumentParser, command: str, ns: argparse.Namespace, saved: Prepared
) -> None:
    """After parsing: give every option no flag set its env/file/default value, record
    the sources on ``ns.config_sources``, then check what was required."""
    given = {
        a.dest
        for a in saved.actions
        if not (getattr(ns, a.dest, _UNSET) is _UNSET or getattr(ns, a.dest) is a.default)
    }
    restore(saved)
    found = _lookup(parser, command, given, os.environ)
    for action in saved.actions:
        value = getattr(ns, action.dest, _UNSET)
        if action.dest in given:
            if isinstance(value, _UnsetList):
                setattr(ns, action.dest, list(value))
            continue
        raw, source = found[action.dest]
        if source != "default" and raw is not None:
            setattr(ns, action.dest, _convert(parser, action, raw, source))
        elif value is _UNSET or isinstance(value, _UnsetList):
            setattr(ns, action.dest, _builtin(parser, action))
    ns.config_sources = _settings(found)
    for dest in given:  # a flag's value as parsed
        ns.config_sources[dest] = Setting(_text(getattr(ns, dest)), found[dest][1])
    missing = [
        "/".join(a.option_strings)
        for a, (_default, required) in saved.actions.items()
        if required and getattr(ns, a.dest, None) is None
    ]
    if missing:
        parser.error("the following arguments are required: " + ", ".join(missing))
    for group in saved.groups:
        if all(getattr(ns, a.dest, None) in (None, False) for a in group._group_actions):
            names = " ".join(a.option_strings[0] for a in group._group_actions)
            parser.error(f"one of the arguments {names} is required")


def resolve_options(
    parser: argparse.ArgumentParser, command: str, env: Mapping[str, str]
) -> dict[str, Setting]:
    """Each configurable option's value (as text) and source when no flag is given:
    ``$VAR``, a file and its table, or ``default``. What ``accel config COMMAND`` prints."""
    return _settings(_lookup(parser, command, set(), env))


def _settings(found: dict[str, tuple[Value | None, str]]) -> dict[str, Setting]:
    return {
        dest: Setting(None if raw is None else _text(raw), source)
        for dest, (raw, source) in found.items()
    }


def _lookup(
    parser: argparse.ArgumentParser, command: str, given: set[str], env: Mapping[str, str]
) -> dict[str, tuple[Value | None, str]]:
    files = load_files(config_files(env))
    actions = configurable(parser)
    dests = {a.dest for a in actions}
    commands = getattr(parser, "known_commands", ())
    for cfg in files:
        strange = sorted(name for name in cfg.tables if commands and name not in commands)
        if strange:
            raise ConfigError(
                f"the config file {cfg.path} has a table [{strange[0]}], but accel has no "
                f"such command",
                hint="a table is named after a command: " + ", ".join(sorted(commands)),
                path=str(cfg.path),
            )
        known = {name for a in actions for name in _names(a)} | dests
        unknown = sorted(set(cfg.tables.get(command, {})) - known)
        if unknown:
            names = ", ".join(sorted(_flag(a).lstrip("-") for a in actions))
            raise ConfigError(
                f"the config file {cfg.path}: [{command}] sets "
                f"{', '.join(u.replace('_', '-') for u in unknown)}, "
                f"which `accel {command}` does not have",
                hint=f"its options: {names} (see `accel {command} --help`)",
                path=str(cfg.path),
            )
    out: dict[str, tuple[Value | None, str]] = {}
    for action in actions:
        if action.dest in out:
            continue  # two flags for one value (serve --root/--store)
        if action.dest in given:
            out[action.dest] = (None, _flag(action))
            continue
        got = option_setting(command, action.dest, env, files, _names(action))
        out[action.dest] = got if got is not None else (_default_value(action), "default")
    return out


def _names(action: argparse.Action) -> tuple[str, ...]:
    """The option's long names as table keys: ``--max-download-limit`` -> ``max_download_limit``."""
    return tuple(o[2:].replace("-", "_") for o in action.option_strings if o.startswith("--"))


def _flag(action: argparse.Action) -> str:
    """The option's long name (``--connections`` for ``-x``, ``-s``, ``--split``, ...)."""
    return next((o for o in action.option_strings if o.startswith("--")), action.option_strings[0])


def _default_value(action: argparse.Action) -> Value | None:
    default = action.default
    if isinstance(default, str | int | float | bool):
        return default
    if isinstance(default, list) and default:
        return [str(item) for item in default]
    return None if default is None or isinstance(default, list) else str(default)


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _builtin(parser: argparse.ArgumentParser, action: argparse.Action) -> Any:
    default = action.default
    if isinstance(default, str) and action.type is not None:
        return parser._get_value(action, default)  # what argparse does for a str default
    return list(default) if isinstance(default, list) else default


def _convert(
    parser: argparse.ArgumentParser, action: argparse.Action, raw: Value, source: str
) -> Any:
    """A file's or environment's value as the option's own ``type`` makes it; a bad one
    is a ConfigError naming where it came from."""
    where = f"{source}: {action.dest}"
    if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{where} must be true or false, not {raw!r}")
    if isinstance(action, argparse._AppendAction):
        items = raw if isinstance(raw, list) else [raw]
        return [_one(parser, action, item, where) for item in items]
    if isinstance(raw, list):
        raise ConfigError(f"{where} takes one value, not a list")
    return _one(parser, action, raw, where)


def _one(parser: argparse.ArgumentParser, action: argparse.Action, raw: Any, where: str) -> Any:
    if isinstance(raw, bool):
        raise ConfigError(f"{where} takes a value, not {str(raw).lower()}")
    try:
        value = parser._get_value(action, str(raw))
    except argparse.ArgumentError as exc:
        raise ConfigError(f"{where}: {exc.message}") from exc
    except AccelError as exc:
        # the option's own error (unsupported_scheme, ...), saying where the value was
        err = type(exc).__new__(type(exc))
        AccelError.__init__(err, f"{where}: {exc.message}", hint=exc.hint, **exc.facts)
        raise err from exc
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise ConfigError(f"{where}: {raw!r} is not one of {choices}")
    return value
