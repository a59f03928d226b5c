"""Whether a server may listen on a port: the lookup API and the console ask before they start."""

from __future__ import annotations

import errno
import socket

from store.errors import ConfigError


def check_port(host: str, port: int, *, hint: str = ": stop what listens there or pick another --port") -> None:
    """Raise `ConfigError` when ``host:port`` cannot be listened on alone: something listens there
    already (a port that was merely in use, waiting in TIME_WAIT, is free). Port 0 is always free.
    ``hint`` follows "port N on HOST is already in use" at once."""
    if port == 0:
        return
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}; give --host an address or "
                          "a name of this machine") from exc
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as every server sets it
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"port {port} on {host} is already in use{hint}") from exc
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
