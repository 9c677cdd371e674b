"""``accel schema events``: the JSON Schema of the NDJSON lines ``--json`` prints.

Exported from the pydantic models the manager publishes (``accel.manager.events``), so
the document cannot drift from what ``install``, ``pull``, ``preseed``, ``update`` and
the node's event stream emit. Every line also carries ``event`` (its name) and
``schema`` (:data:`~accel._cli._models.NDJSON_SCHEMA`).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from accel._cli._models import NDJSON_SCHEMA

__all__ = ["register"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "schema",
        help="print the JSON Schema of the --json (NDJSON) event lines",
        description="Print the JSON Schema (draft 2020-12) of the lines `--json` prints, "
        "generated from the event models: each line has `event`, `schema` and, for a "
        "model, `model_id` and `version`.",
        epilog="Example: accel schema events > accel-events.schema.json",
    )
    p.add_argument("what", choices=("events",), help="the document to print: events")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from pydantic import TypeAdapter

    from accel.manager.events import Event

    doc = TypeAdapter(Event).json_schema(mode="serialization")
    doc["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    doc["title"] = f"accel NDJSON events, schema {NDJSON_SCHEMA}"
    doc["description"] = (
        "One JSON object per line. Besides these fields every line carries "
        "'event' (= 'type') and 'schema' (an integer, now "
        f"{NDJSON_SCHEMA}); a command's own lines are 'result' and 'error'."
    )
    print(json.dumps(doc, indent=2, sort_keys=True))
    return 0
