"""What both servers share: the listening socket, bound before any server sees it, and the access log.

Binding in the plugin's ``start()`` rather than in the server is what turns
"port in use" into a failed start with a clear message (instead of a log line
from a background task), and port ``0`` into a real port known before
``start()`` returns.  Imports only the standard library, so the default
server never pays for uvicorn.
"""

from __future__ import annotations

import errno
import logging
import socket
from typing import Final

from plugin_sdk import PluginError

#: Pending connections the listening socket queues (uvicorn's default).
BACKLOG: Final = 2048
#: The logger of the ``access_log`` setting, whichever server runs.
ACCESS_LOGGER: Final = "orion.http.access"


def _explain(error: OSError) -> str:
    code = error.errno
    if code == errno.EADDRINUSE:
        return "address already in use (set plugins.http.settings.port, or 0 for any free port)"
    if code in (errno.EACCES, errno.EPERM):
        return "permission denied (ports below 1024 need privileges; set plugins.http.settings.port)"
    if code == errno.EADDRNOTAVAIL:
        return "address not available on this machine (set plugins.http.settings.host)"
    return error.strerror or str(error)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening, non-blocking TCP socket on ``host:port`` (``port`` 0: any free port).

    :raises PluginError: the host does not resolve or the address cannot be bound.
    """
    where = f"{host}:{port}"
    try:
        # An ASCII host goes as bytes: a str makes the socket module import the idna codec
        # (encodings.idna, stringprep, unicodedata: about 0.4 MiB) to encode it.
        name: str | bytes = host.encode("ascii") if host.isascii() else host
        infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise PluginError(
            f"http: cannot listen on {where}: cannot resolve host {host!r} ({exc.strerror}; "
            "set plugins.http.settings.host)",
            plugin="http",
        ) from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        # Lets a restart bind while old connections sit in TIME_WAIT; on Linux
        # it does not let two sockets listen on one port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(BACKLOG)  # hold the port now: a bound but idle socket does not stop another listener
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise PluginError(f"http: cannot listen on {where}: {_explain(exc)}", plugin="http") from None
    return sock


def format_client(client: tuple[str, int] | None) -> str:
    """``host:port`` of a scope's ``client``, ``-`` when unknown."""
    if not client:
        return "-"
    host, port = client[0], client[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def log_access(
    logger: logging.Logger,
    client: tuple[str, int] | None,
    method: str,
    path: str,
    query: bytes,
    http_version: str,
    status: int,
    seconds: float,
) -> None:
    """One access-log line: ``127.0.0.1:50312 - "GET /metrics?x=1 HTTP/1.1" 200 1.3ms``."""
    target = f"{path}?{query.decode('ascii', 'replace')}" if query else path
    logger.info(
        '%s - "%s %s HTTP/%s" %d %.1fms', format_client(client), method, target, http_version, status, seconds * 1e3
    )
