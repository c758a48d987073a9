"""Test-only: record every host name this process looks up (to ``MIA_NETLOG``)."""

import os
import socket

_LOG = os.environ.get("MIA_NETLOG")
_real = socket.getaddrinfo


def _logged(host, *args, **kwargs):
    with open(_LOG, "a") as f:
        f.write(f"{host}\n")
    return _real(host, *args, **kwargs)


if _LOG:
    socket.getaddrinfo = _logged
