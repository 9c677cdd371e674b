"""Where the CLI's settings come from: flag > environment > config file > default.

A person should not have to pass ``--models-dir`` and ``--hub`` every time. The config
files are TOML: ``$XDG_CONFIG_HOME/accel/config.toml`` (``~/.config/accel/config.toml``)
for a person, then ``/etc/accel/config.toml`` for a node's service; the first file that
sets a key wins. Two kinds of keys:

- at the top, the shared settings ``hub``, ``token_file``, ``models_dir`` and
  ``limit_rate``: every command with that option takes them;
- in a table named after a command, any long option of that command (``[serve]``
  ``root = "/srv/hub"``, ``port = 8600``; ``[node] listen = "0.0.0.0:8700"``), spelled
  with ``_`` or ``-``; a table's key wins over the same top-level key in that file.

An option's environment variable (:data:`OPTION_ENV`, e.g. ``$ACCEL_HUB``) beats every
file. The default models dir is ``/var/lib/accel/models`` for root and
``$XDG_DATA_HOME/accel/models`` (``~/.local/share/accel/models``) otherwise.

Pure but for reading the files it is given: :func:`resolve` (the shared settings) and
:func:`option_setting` (one option of one command) take the environment and the files,
and return each value with where it came from (what ``accel config`` prints). Never
writes anything.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

from accel.errors import ConfigError

__all__ = [
    "ENV",
    "KEYS",
    "OPTION_ENV",
    "ConfigFile",
    "Setting",
    "config_files",
    "default_models_dir",
    "env_var",
    "load_files",
    "option_setting",
    "read_token",
    "resolve",
]

#: the keys a config file may set
KEYS = ("hub", "models_dir", "limit_rate", "token_file")
#: the environment variable of each key
ENV = {
    "hub": "ACCEL_HUB",
    "models_dir": "ACCEL_MODELS_DIR",
    "limit_rate": "ACCEL_LIMIT_RATE",
    "token_file": "ACCEL_TOKEN_FILE",
}
SYSTEM_CONFIG = Path("/etc/accel/config.toml")

#: the environment variable an option reads, by option (dest) name; per command where
#: one differs (the hub's own token is not the token a client sends to a hub)
OPTION_ENV: dict[str, dict[str, str]] = {
    "*": {
        "hub": "ACCEL_HUB",
        "models_dir": "ACCEL_MODELS_DIR",
        "limit_rate": "ACCEL_LIMIT_RATE",
        "token": "ACCEL_TOKEN",
        "hf_endpoint": "HF_ENDPOINT",
        "scheduler_token": "ACCEL_SCHEDULER_TOKEN",
    },
    "serve": {"token": "ACCEL_HUB_TOKEN"},
}

#: what a config value may be: TOML strings, numbers, booleans, or a list of them
Value: TypeAlias = str | int | float | bool | list[str | int | float | bool]


@dataclass(frozen=True)
class Setting:
    """One value in effect and where it came from (``--hub``, ``$ACCEL_HUB``, a file path,
    ``default``, or ``unset``)."""

    value: str | None
    source: str


def config_files(env: Mapping[str, str]) -> list[Path]:
    """The config files in the order they are asked (the first that sets a key wins)."""
    home = Path(env.get("HOME") or os.path.expanduser("~"))
    xdg = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else home / ".config"
    return [xdg / "accel" / "config.toml", SYSTEM_CONFIG]


def default_models_dir(env: Mapping[str, str], euid: int) -> Path:
    """``/var/lib/accel/models`` for root, ``$XDG_DATA_HOME/accel/models`` otherwise."""
    if euid == 0:
        return Path("/var/lib/accel/models")
    home = Path(env.get("HOME") or os.path.expanduser("~"))
    data = Path(env["XDG_DATA_HOME"]) if env.get("XDG_DATA_HOME") else home / ".local" / "share"
    return data / "accel" / "models"


@dataclass(frozen=True)
class ConfigFile:
    """One config file as read: its shared settings and its per-command tables."""

    path: Path
    shared: dict[str, str]
    tables: dict[str, dict[str, Value]]


def load_files(files: list[Path]) -> list[ConfigFile]:
    """Read each file (a missing one is empty); a file accel cannot use is a ConfigError."""
    return [_load(path) for path in files]


def _scalar(value: object) -> bool:
    return isinstance(value, str | int | float)


def _load(path: Path) -> ConfigFile:
    empty = ConfigFile(path, {}, {})
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return empty
    except OSError as exc:
        raise ConfigError(
            f"cannot read the config file {path}: {exc.strerror}", path=str(path)
        ) from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(
            f"the config file {path} is not valid TOML: {exc}",
            hint="fix it, or move it away",
            path=str(path),
        ) from exc
    out: dict[str, str] = {}
    tables: dict[str, dict[str, Value]] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            table: dict[str, Value] = {}
            for name, item in value.items():
                ok = _scalar(item) or (isinstance(item, list) and all(map(_scalar, item)))
                if not ok:
                    raise ConfigError(
                        f"the config file {path}: [{key}] {name} must be a string, a number, "
                        "true/false or a list of them",
                        path=str(path),
                        key=f"{key}.{name}",
                    )
                table[name.replace("-", "_")] = item
            tables[key] = table
            continue
        if key not in KEYS:
            raise ConfigError(
                f"the config file {path} sets {key!r}, which accel does not know",
                hint="the keys at the top are: " + ", ".join(KEYS) + "; a command's own "
                "options go in its table, e.g. [serve] port = 8600",
                path=str(path),
            )
        if not _scalar(value) or isinstance(value, bool):
            raise ConfigError(
                f"the config file {path}: {key} must be a string", path=str(path), key=key
            )
        out[key] = str(value)
    return ConfigFile(path, out, tables)


def resolve(
    flags: Mapping[str, str | None],
    env: Mapping[str, str],
    files: list[Path] | None = None,
    *,
    euid: int | None = None,
) -> dict[str, Setting]:
    """Each key's value and source: flag > environment > config file > default."""
    files = config_files(env) if files is None else files
    loaded = [(c.path, c.shared) for c in load_files(files)]
    out: dict[str, Setting] = {}
    for key in KEYS:
        flag = flags.get(key)
        if flag is not None:
            out[key] = Setting(str(flag), "--" + key.replace("_", "-"))
            continue
        if env.get(ENV[key]):
            out[key] = Setting(env[ENV[key]], "$" + ENV[key])
            continue
        found = next(((p, d[key]) for p, d in loaded if key in d), None)
        if found is not None:
            out[key] = Setting(found[1], str(found[0]))
        elif key == "models_dir":
            uid = os.geteuid() if euid is None else euid
            out[key] = Setting(str(default_models_dir(env, uid)), "default")
        else:
            out[key] = Setting(None, "unset")
    return out


def env_var(command: str, dest: str) -> str | None:
    """The environment variable option ``dest`` of ``command`` reads, if it has one."""
    return OPTION_ENV.get(command, {}).get(dest) or OPTION_ENV["*"].get(dest)


def option_setting(
    command: str,
    dest: str,
    env: Mapping[str, str],
    files: list[ConfigFile],
    names: tuple[str, ...] = (),
) -> tuple[Value, str] | None:
    """Where option ``dest`` of ``command`` gets a value when no flag gave one, and that
    value: its environment variable, else the first file that sets it (its
    ``[command]`` table under ``dest`` or one of the option's long ``names``, ``-`` read as
    ``_``; then a shared top-level key); None: the built-in default."""
    var = env_var(command, dest)
    if var is not None and env.get(var):
        return env[var], "$" + var
    for cfg in files:
        table = cfg.tables.get(command, {})
        key = next((k for k in (dest, *names) if k in table), None)
        if key is not None:
            return table[key], f"{cfg.path} [{command}]"
        if dest in cfg.shared:
            return cfg.shared[dest], str(cfg.path)
    return None


def read_token(path: str) -> str:
    """The hub token kept in ``path`` (a config's ``token_file``), stripped."""
    try:
        return Path(path).expanduser().read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the token file {path}: {exc.strerror}",
            hint="check token_file in the config file (or $ACCEL_TOKEN_FILE)",
            path=path,
        ) from exc
