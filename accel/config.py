"""Where the CLI's settings come from: flag > environment > config file > default.

A person should not have to pass ``--models-dir`` and ``--hub`` every time. The config
files are TOML with the keys ``hub``, ``token_file``, ``models_dir`` and ``limit_rate``:
``$XDG_CONFIG_HOME/accel/config.toml`` (``~/.config/accel/config.toml``) for a person,
then ``/etc/accel/config.toml`` for a node's service; the first file that sets a key
wins. The default models dir is ``/var/lib/accel/models`` for root and
``$XDG_DATA_HOME/accel/models`` (``~/.local/share/accel/models``) otherwise.

Pure but for reading the files it is given: :func:`resolve` takes the flags, the
environment and the files' paths, and returns each value with where it came from (what
``accel config`` prints). Never writes anything.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from accel.errors import ConfigError

__all__ = ["ENV", "KEYS", "Setting", "config_files", "default_models_dir", "read_token", "resolve"]

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


def _load(path: Path) -> dict[str, str]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
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
    for key, value in data.items():
        if key not in KEYS:
            raise ConfigError(
                f"the config file {path} sets {key!r}, which accel does not know",
                hint="the keys are: " + ", ".join(KEYS),
                path=str(path),
            )
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(
                f"the config file {path}: {key} must be a string", path=str(path), key=key
            )
        out[key] = str(value)
    return out


def resolve(
    flags: Mapping[str, str | None],
    env: Mapping[str, str],
    files: list[Path] | None = None,
    *,
    euid: int | None = None,
) -> dict[str, Setting]:
    """Each key's value and source: flag > environment > config file > default."""
    files = config_files(env) if files is None else files
    loaded = [(path, _load(path)) for path in files]
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


def read_token(path: str) -> str:
    """The hub token kept in ``path`` (a config's ``token_file``), stripped."""
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the token file {path}: {exc.strerror}",
            hint="check token_file in the config file (or $ACCEL_TOKEN_FILE)",
            path=path,
        ) from exc
