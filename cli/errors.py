"""Expected failures become one-line messages with a documented exit code, never a traceback.

Exit codes (documented in docs/commands.md):
  0  success
  1  an expected failure (missing database, broker unreachable, bad input); the message says
     what to do
  2  a usage error: an unknown option, or a bad value (out of its range, not finite, a time
     outside 1970..2200), refused before the command runs
  3  the database is locked by another process (an ingester); for `kafka status`: no broker
     is running or none answers (the status is printed all the same)
  130 interrupted (Ctrl-C)
"""

from __future__ import annotations

from typing import IO, Any

import click

from fleetlog.ingest.contract.errors import FleetlogError
from fleetlog.ingest.store import StoreLocked

EXIT_FAILURE = 1
EXIT_LOCKED = 3
EXIT_NOT_ANSWERING = 3  # `kafka status`: LSB's "program is not running", as `service status`
EXIT_INTERRUPTED = 130


class CommandFailed(click.ClickException):
    """A ClickException with its own exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click reads it per instance

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"Error: {_one_line(self.format_message())}", err=True, file=file)


class Interrupted(CommandFailed):
    """Ctrl-C (SIGINT): "Interrupted." and exit code 130, the shell's convention, from every
    command. click would otherwise turn ``KeyboardInterrupt`` into "Aborted!" and exit 1."""

    def __init__(self) -> None:
        super().__init__("Interrupted.", EXIT_INTERRUPTED)

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(_one_line(self.format_message()), err=True, file=file)


def _one_line(message: str) -> str:
    """The message as one line, without the line ends it may carry (echo ends it with exactly
    one): two errors in a row are two lines, never one run into the other or a blank between."""
    return " ".join(part.strip() for part in message.splitlines() if part.strip())


def translate(exc: Exception) -> CommandFailed | None:
    """The one place a library failure becomes a message: every ``FleetlogError``, first line."""
    if isinstance(exc, StoreLocked):
        return CommandFailed(str(exc), EXIT_LOCKED)
    if isinstance(exc, FleetlogError):
        return CommandFailed(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return None
