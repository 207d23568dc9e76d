"""Why kafka-python could not connect, when the broker answered but refused us.

kafka-python retries a failed connection until its bootstrap time runs out and then raises only
``KafkaTimeoutError: Unable to bootstrap``: a broker that is down and one that refused the SASL
handshake (a wrong mechanism, a listener without SASL, bad credentials, a TLS mismatch) look the
same. What it met on the way it logs, with the exception as an argument. ``watch_connect``
collects those exceptions while a client is being built, so the error can name the real cause.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import Iterator

from fleetlog.ingest.kafka.settings import ENV_PREFIX, KafkaSettings

_LOGGERS = ("kafka.net.manager", "kafka.net.connection", "kafka.net.transport")


class ConnectCause(logging.Handler):
    """The exceptions kafka-python logged while connecting (records are not printed)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        for arg in args:
            if isinstance(arg, BaseException) and len(self.errors) < 100:
                self.errors.append(arg)

    @property
    def refusal(self) -> BaseException | None:
        """The last error that says the broker answered and refused us (SASL, TLS, auth)."""
        for error in reversed(self.errors):
            name = type(error).__name__
            if isinstance(error, ssl.SSLError) or any(
                    word in name for word in ("Sasl", "Authentication", "Authorization")):
                return error
        return None

    def message(self, settings: KafkaSettings) -> str | None:
        """A one-line cause with what to check when the broker answered and refused us (SASL,
        authentication, TLS); None when it never answered (the caller says so)."""
        error = self.refusal
        if error is None:
            return None
        name = type(error).__name__
        text = settings.redact(" ".join(f"{name}: {error}".split()))[:300]
        mechanism = f" with SASL mechanism {settings.sasl_mechanism}" if (
            settings.sasl_mechanism) else ""
        return (f"Kafka at {settings.bootstrap} refused the {settings.security_protocol} "
                f"connection{mechanism} ({text}): check {ENV_PREFIX}SECURITY_PROTOCOL, "
                f"{ENV_PREFIX}SASL_MECHANISM and the credentials against the broker's listener")


@contextlib.contextmanager
def watch_connect() -> Iterator[ConnectCause]:
    """Collect what kafka-python logs while connecting, without showing it."""
    cause = ConnectCause()
    saved = []
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.propagate))
        logger.setLevel(logging.WARNING)
        logger.propagate = False  # collected here, never printed
        logger.addHandler(cause)
    try:
        yield cause
    finally:
        for logger, level, propagate in saved:
            logger.removeHandler(cause)
            logger.setLevel(level)
            logger.propagate = propagate
