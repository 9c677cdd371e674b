"""Every subcommand says what it does, with an example, and every option has a help line."""

from __future__ import annotations

import argparse

from accel.cli import build_parser

# serve, publish and gc belong to the hub-on-S3 work (issue 17), which owns their options
_ELSEWHERE = {"serve", "publish", "gc"}


def test_every_subcommand_and_option_is_described() -> None:
    parser = build_parser()
    assert "developer" not in (parser.description or "") and "Never holds logic" not in (
        parser.description or ""
    )
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for name, p in sub.choices.items():
        if name in _ELSEWHERE:
            continue
        if not p.description:
            missing.append(f"{name}: description")
        if "accel " not in (p.epilog or "") + (p.description or ""):
            missing.append(f"{name}: example")
        for action in p._actions:
            if isinstance(action, argparse._HelpAction) or action.help:
                continue
            missing.append(f"{name}: {action.option_strings or action.dest}")
    assert not missing, missing
