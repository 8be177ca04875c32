"""Free TCP ports for the Ray nodes and servers a test starts.

Binding port 0 asks the kernel for a free port, but once the socket closes the kernel may hand
the same port out again, so two calls in a row can return one port (CI once gave Ray's
object manager and runtime-env agent the same one). Every port handed out here is remembered
for the whole test session and never handed out twice.
"""

from __future__ import annotations

import socket

_handed_out: set[int] = set()


def free_port() -> int:
    """A port free on 127.0.0.1 now and never returned before in this test session."""
    for _ in range(1000):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no free port found that was not handed out before")
