"""Settings: flag > environment > config file > default (accel/config.py, `accel config`)."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from accel.config import resolve
from accel.errors import ConfigError, UsageError


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


# --- every subcommand, one generic rule (accel/_cli/_settings.py) ---------------------


def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> Path:
    """A config file as the user's, and no ACCEL_* variable of the test's own shell."""
    for key in list(os.environ):
        if key.startswith("ACCEL_") or key == "HF_ENDPOINT":
            monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setattr("accel.config.SYSTEM_CONFIG", tmp_path / "no-system.toml")
    return _write(tmp_path / "cfg/accel/config.toml", text)


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    from accel.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_option_of_every_command_can_come_from_its_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No command wires its options by hand: an option added tomorrow (to serve, node...)
    is configurable by the same rule, so this walks whatever options exist."""
    from accel._cli._settings import configurable, resolve_options

    commands = _subparsers()
    lines = []
    for name, p in commands.items():
        lines.append(f"[{name}]")
        for action in configurable(p):
            long = [o for o in action.option_strings if o.startswith("--")]
            lines.append(f'{long[-1][2:]} = "v-{action.dest}"')  # any long name will do
    cfg = _isolated(tmp_path, monkeypatch, "\n".join(lines) + "\n")
    checked = 0
    for name, p in commands.items():
        got = resolve_options(p, name, os.environ)
        for action in configurable(p):
            assert got[action.dest].source == f"{cfg} [{name}]", (name, action.dest)
            assert got[action.dest].value == f"v-{action.dest}"
            checked += 1
    assert {"serve", "publish", "gc", "node"} <= set(commands) and checked > 100


def test_serve_publish_gc_and_node_take_flag_env_file_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from accel.cli import build_parser

    store = tmp_path / "store"
    cfg = _isolated(
        tmp_path,
        monkeypatch,
        f'hub = "http://top:1"\nlimit_rate = "7M"\n'
        f'[serve]\nroot = "{store}"\nport = 9001\nmax-connections = "12"\n'
        f'storage_mode = "proxy"\ntoken = "from-file"\n'
        f'[publish]\nroot = "{store}"\nlanguage = ["zh", "en"]\ndefault = true\n'
        f'[gc]\nroot = "{store}"\nmin-age = 5\n'
        f'[node]\nhub = "http://node-table:1"\nlisten = "127.0.0.1:0"\npreseed_top = 2\n',
    )
    parse = build_parser().parse_args
    a = parse(["serve"])  # --root is required: the file gives it
    assert (a.root, a.port, a.max_connections, a.storage_mode) == (str(store), 9001, 12, "proxy")
    assert a.host == "127.0.0.1" and a.config_sources["host"].source == "default"
    assert a.config_sources["port"].source == f"{cfg} [serve]"
    assert parse(["serve", "--port", "9002"]).port == 9002  # flag > file
    assert parse(["serve", "--store", str(tmp_path)]).root == str(tmp_path)  # either flag
    assert a.token == "from-file"
    monkeypatch.setenv("ACCEL_HUB_TOKEN", "from-env")
    assert parse(["serve"]).token == "from-env"  # env > file
    assert parse(["serve", "--token", "flag"]).token == "flag"  # flag > env
    a = parse(["publish", str(tmp_path), "--model", "m", "--version", "1"])
    assert (a.root, a.language, a.default) == (str(store), ["zh", "en"], True)
    assert parse(["publish", str(tmp_path), "--model", "m", "--version", "1",
                  "--language", "fr"]).language == ["fr"]  # fmt: skip
    a = parse(["gc"])
    assert (a.root, a.min_age) == (str(store), 5.0)
    a = parse(["node"])
    assert (a.hub, a.listen, a.preseed_top, a.limit_rate) == (
        "http://node-table:1", "127.0.0.1:0", 2, "7M"
    )  # fmt: skip
    assert parse(["get", "http://x/f"]).limit_rate == "7M"  # a shared key, every command
    monkeypatch.setenv("ACCEL_HUB", "http://env:1")
    assert parse(["node"]).hub == "http://env:1"
    assert parse(["node", "--hub", "http://flag:1"]).hub == "http://flag:1"
    monkeypatch.delenv("ACCEL_HUB")
    assert parse(["node"]).max_parallel_files == 3  # the built-in default


def test_a_required_option_no_source_gives_is_still_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from accel.cli import build_parser

    _isolated(tmp_path, monkeypatch, "")
    parse = build_parser().parse_args
    with pytest.raises(UsageError, match="one of the arguments --root --store is required"):
        parse(["serve"])
    with pytest.raises(UsageError, match="required: --root"):
        parse(["publish", str(tmp_path), "--model", "m", "--version", "1"])
    with pytest.raises(UsageError, match="not allowed with"):
        parse(["serve", "--root", "a", "--store", "b"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[serve]\nport = "abc"\n', r"\[serve\]: port: invalid int value: 'abc'"),
        ("[serve]\nprot = 1\n", r"\[serve\] sets prot, which `accel serve` does not have"),
        ('[serve]\nstorage-mode = "nope"\n', r"'nope' is not one of redirect, proxy"),
        ("[gc]\ndelete = 3\n", "delete must be true or false"),
        ("[serv]\nport = 1\n", r"a table \[serv\], but accel has no such command"),
        ('[serve]\nroot = "ftp://x"\n', r"\[serve\]: root: "),
    ],
)
def test_a_bad_command_table_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, message: str
) -> None:
    cfg = _isolated(tmp_path, monkeypatch, text)
    env = dict(os.environ)
    cmd = "gc" if text.startswith("[gc]") else "serve"
    r = subprocess.run([sys.executable, "-m", "accel", cmd], env=env, capture_output=True,
                       text=True, timeout=60)  # fmt: skip
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    # the option's own error code where it has one (a store root: unsupported_scheme)
    code = "unsupported_scheme" if "ftp://" in text else "config_error"
    assert len(lines) == 1 and lines[0].startswith(f"accel: error [{code}]: "), r.stderr
    assert str(cfg) in lines[0] and re.search(message, lines[0]), lines[0]
    # help still works with a broken file: the file is read after the arguments
    r = subprocess.run([sys.executable, "-m", "accel", cmd, "--help"], env=env,
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0 and "usage: accel" in r.stdout


def test_serve_gc_and_node_run_from_the_config_file_alone(tmp_path: Path) -> None:
    """The real processes: `accel serve`, `accel gc`, `accel node` with no flag at all,
    `accel config serve` saying where each value came from."""
    from tests.support.hub import publish_model

    store = tmp_path / "store"
    publish_model(store, "m", "1", {"a.bin": 5000})
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCEL_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "cfg")
    cfg = _write(tmp_path / "cfg/accel/config.toml",
                 f'models_dir = "{tmp_path / "models"}"\n'
                 f'[serve]\nroot = "{store}"\nport = 0\n'
                 f'[gc]\nroot = "{store}"\n[node]\nlisten = "127.0.0.1:0"\n')  # fmt: skip
    cmd = [sys.executable, "-m", "accel"]
    r = subprocess.run([*cmd, "config", "serve"], env=env, capture_output=True, text=True,
                       timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert re.search(rf"^root +{re.escape(str(store))} +\({re.escape(str(cfg))} \[serve\]\)$",
                     r.stdout, re.M), r.stdout  # fmt: skip
    assert re.search(r"^host +127\.0\.0\.1 +\(default\)$", r.stdout, re.M), r.stdout
    r = subprocess.run([*cmd, "gc"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and f"gc {store}: would remove" in r.stdout, r.stderr
    serve = subprocess.Popen([*cmd, "serve"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert serve.stdout is not None
        line = serve.stdout.readline()
        m = re.search(r"at (http://127\.0\.0\.1:\d+)", line)
        assert m and f"serving {store}" in line, line + (
            serve.stderr.read() if serve.stderr else ""
        )
        hub = m.group(1)
        with open(cfg, "a") as f:
            f.write(f'[install]\nhub = "{hub}"\n')  # the install's own table
        node_env = {**env, "ACCEL_HUB": hub}
        node = subprocess.Popen([*cmd, "node"], env=node_env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            assert node.stdout is not None
            line = node.stdout.readline()
            assert line.startswith("accel node listening on http://127.0.0.1:"), line
        finally:
            node.terminate()
            node.wait(timeout=30)
        r = subprocess.run([*cmd, "install", "m@1", "-q"], env=env, capture_output=True,
                           text=True, timeout=120)  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == str(tmp_path / "models" / "m" / "1")
    finally:
        serve.terminate()
        serve.wait(timeout=30)


def test_serve_workers_from_the_file_start_that_many_hub_processes(tmp_path: Path) -> None:
    """`[serve] workers = 2`: the two worker processes must not read it too (each would
    start workers of its own): they are told --workers 1."""
    import urllib.request

    import psutil

    store = tmp_path / "store"
    (store / "models").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCEL_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "cfg")
    _write(
        tmp_path / "cfg/accel/config.toml", f'[serve]\nroot = "{store}"\nport = 0\nworkers = 2\n'
    )
    serve = subprocess.Popen([sys.executable, "-m", "accel", "serve"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert serve.stdout is not None
        line = serve.stdout.readline()
        m = re.search(r"at (http://127\.0\.0\.1:\d+) \(2 workers\)", line)
        assert m, line + (serve.stderr.read() if serve.stderr else "")
        for _ in range(4):
            with urllib.request.urlopen(m.group(1) + "/healthz", timeout=30) as r:
                assert r.status == 200
        hubs = [p for p in psutil.Process(serve.pid).children(recursive=True)
                if "serve" in p.cmdline()]  # fmt: skip
        assert len(hubs) == 2, [p.cmdline() for p in hubs]
    finally:
        serve.terminate()
        serve.wait(timeout=60)
