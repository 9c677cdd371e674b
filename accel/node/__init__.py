"""Node integration: the job guard and scheduler reports, reload events, ``accel node``.

The pieces a caller uses::

    JobGuard(manager, reporter, node_id=...)      # run a job, or report MODEL_NOT_AVAILABLE
    SchedulerReporter(transport)                  # background delivery with retries
    HttpTransport(url) / WebSocketTransport(url)  # or transport_for_url(url)
    follow_events(node_url)                       # an inference service's reload feed
    NodeDaemon(NodeConfig(...))                   # what `accel node` runs

Dependencies point one way: node -> manager -> fetch; nothing below imports this package.
"""

from accel.node.client import NodeEvent, follow_events
from accel.node.daemon import NodeConfig, NodeDaemon, run_node
from accel.node.guard import Admission, JobGuard
from accel.node.reporter import Backoff, SchedulerReporter
from accel.node.transport import (
    HttpTransport,
    SchedulerTransport,
    WebSocketTransport,
    transport_for_url,
)

__all__ = [
    "Admission",
    "Backoff",
    "HttpTransport",
    "JobGuard",
    "NodeConfig",
    "NodeDaemon",
    "NodeEvent",
    "SchedulerReporter",
    "SchedulerTransport",
    "WebSocketTransport",
    "follow_events",
    "run_node",
    "transport_for_url",
]
