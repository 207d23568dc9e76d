"""Reader errors: what only the user can decide. Light on imports (the CLI loads it at start)."""

from __future__ import annotations

from fleetlog.ingest.contract.errors import FleetlogError


class ReaderError(FleetlogError):
    """Root of reader errors: the input needs a decision only the user can make."""


class MissingOption(ReaderError):
    """The input needs an option (``--tz``, ``--node``, ``--boot-time``, ``--fields``...)."""


class UnknownFormat(ReaderError):
    """``--format auto`` could not tell what a file is."""
