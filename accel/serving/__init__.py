"""Server-side HTTP rules shared by every accel server: the hub and the node's peer server.

``conditional`` (RFC 9110 conditional requests and byte ranges, pure), ``paths`` (which
ids, versions and file paths are acceptable, pure), ``sendfile`` (the zero-copy send of
a byte range, the one place that touches a client's socket). Imports nothing of
``accel.hub``, ``accel.node`` or the client side (``accel.fetch``, ``accel.manager``):
both servers import these, and the client never imports a server.
"""
