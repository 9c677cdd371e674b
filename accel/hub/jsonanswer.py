"""A catalog answer as an HTTP response: its strong ETag and RFC 9110 conditionals.

One place for every ETag'd JSON route (the seed's API in app.py, the Hugging Face API in
hfapi.py): ``If-None-Match`` -> 304, a failed ``If-Match`` -> 412, else the body.
"""

from __future__ import annotations

import time

from aiohttp import web

from accel.hub.catalog import Answer
from accel.serving.conditional import Representation, Request, evaluate
from accel.serving.problem import Problem

__all__ = ["answer_response"]

_JSON = "application/json"


def answer_response(request: web.Request, answer: Answer) -> web.Response:
    """``answer`` for ``request``, held to its conditional headers."""
    headers = {"ETag": answer.etag, "Cache-Control": "no-cache"}
    decision = evaluate(
        Request.from_headers(request.method, request.headers.items()),
        Representation(etag=answer.etag),
        now=time.time(),
    )
    if decision.status == 304:
        return web.Response(status=304, headers=headers)
    if decision.status == 412:
        raise Problem(412, "precondition_failed", f"the answer changed ({decision.field})", headers)
    return web.Response(body=answer.body, content_type=_JSON, headers=headers)
