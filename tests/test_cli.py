import subprocess


def test_unknown_subcommand_is_a_usage_error(accel_cmd: list[str]) -> None:
    proc = subprocess.run(
        [*accel_cmd, "no-such-command"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "accel" in proc.stderr
