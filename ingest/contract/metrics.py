"""Serve a Prometheus registry on ``/metrics``: how every long-running command (``ingest
--follow``, ``analyze --follow``, ``act --follow``) exposes what it is doing.

It lives in the kernel because every stage that runs for long serves its metrics this one way,
and the stages stand on the kernel (the root package is the top floor: a stage may not import
it). Each stage defines its own metrics beside its code, in a registry of its own
(``ingest.metrics``, ``analysis.metrics``), never in prometheus-client's global one: two
commands, or two tests, in one process do not see each other's series.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from fleetlog.ingest.contract.errors import FleetlogError


class MetricsError(FleetlogError):
    """/metrics cannot be served as asked; the message says what to do."""


@dataclass
class MetricsServer:
    host: str
    port: int  # the port bound (the one asked for, or the one the system gave for 0)
    _server: Any
    _thread: Any

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def parse_address(value: str) -> tuple[str, int]:
    """``9108`` (every interface) or ``127.0.0.1:9108`` -> (host, port)."""
    host, _, port = value.rpartition(":")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise MetricsError(f"{value!r} is not a port (0-65535) or HOST:PORT")
    return host or "0.0.0.0", int(port)


def serve_metrics(registry: CollectorRegistry, address: str) -> MetricsServer:
    """Serve ``registry`` on ``http://address/metrics`` from a daemon thread until ``close``."""
    host, port = parse_address(address)
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise MetricsError(f"cannot serve /metrics on {host}:{port}: {exc.strerror}; pick "
                           "another --metrics-port") from exc
    return MetricsServer(host, int(server.server_port), server, thread)
