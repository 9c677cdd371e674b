"""An HTTP error answer raised by a handler: status, stable code, message, headers.

Every accel server renders it as ``{"error": {"code", "message", "status"}}`` (the hub's
guard, the node's peer server); handlers raise it instead of building responses, so the
error shape lives in one place per server.
"""

from __future__ import annotations

__all__ = ["Problem"]


class Problem(Exception):
    """An HTTP error answer: status, stable code and message (rendered as the error body)."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
