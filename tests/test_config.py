"""Settings: flag > environment > config file > default (accel/config.py, `accel config`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from accel.config import resolve
from accel.errors import ConfigError


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_precedence_flag_env_file_default(tmp_path: Path) -> None:
    user = _write(tmp_path / "u.toml", 'hub = "http://file:1"\nlimit_rate = "5M"\n')
    system = _write(tmp_path / "s.toml", 'hub = "http://system:1"\nmodels_dir = "/srv/m"\n')
    env = {"HOME": str(tmp_path), "ACCEL_LIMIT_RATE": "9M"}
    got = resolve({"hub": None}, env, [user, system], euid=1000)
    assert (got["hub"].value, got["hub"].source) == ("http://file:1", str(user))
    assert (got["models_dir"].value, got["models_dir"].source) == ("/srv/m", str(system))
    assert (got["limit_rate"].value, got["limit_rate"].source) == ("9M", "$ACCEL_LIMIT_RATE")
    assert got["token_file"].source == "unset"
    got = resolve({"hub": "http://flag:1"}, {**env, "ACCEL_HUB": "http://env:1"}, [user])
    assert (got["hub"].value, got["hub"].source) == ("http://flag:1", "--hub")
    got = resolve({}, {"HOME": str(tmp_path)}, [], euid=1000)
    assert got["models_dir"].value == str(tmp_path / ".local/share/accel/models")
    assert resolve({}, {}, [], euid=0)["models_dir"].value == "/var/lib/accel/models"


def test_a_bad_config_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        resolve({}, {}, [_write(tmp_path / "a.toml", "hub = \n")])
    with pytest.raises(ConfigError, match="'hubb', which accel does not know"):
        resolve({}, {}, [_write(tmp_path / "b.toml", 'hubb = "x"\n')])


def test_accel_config_and_install_use_the_config_file(tmp_path: Path) -> None:
    from tests.manager.hubstub import publish, running_stub

    store = tmp_path / "store"
    (store / "models").mkdir(parents=True)
    publish(store, "m", "1", {"a.bin": 10_000})
    with running_stub(store) as hub:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ACCEL_")}
        env["XDG_CONFIG_HOME"] = str(tmp_path / "cfg")
        models = tmp_path / "models"
        _write(tmp_path / "cfg/accel/config.toml", f'hub = "{hub.url}"\nmodels_dir = "{models}"\n')
        cmd = [sys.executable, "-m", "accel"]
        r = subprocess.run([*cmd, "config", "--json"], env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        got = json.loads(r.stdout)["settings"]
        assert got["hub"] == {"value": hub.url, "source": str(tmp_path / "cfg/accel/config.toml")}
        r = subprocess.run([*cmd, "install", "m@1", "-q"], env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == str(models / "m" / "1")
        r = subprocess.run([*cmd, "config"], env={**env, "ACCEL_HUB": "http://h:1"},
                           capture_output=True, text=True)  # fmt: skip
        assert "http://h:1" in r.stdout and "($ACCEL_HUB)" in r.stdout
