"""The live display of `fleetlog ingest`: on a terminal only, quiet otherwise."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any

from fleetlog.ingest.pipeline import IngestStats


class LiveIngest:
    """Rate, lag per partition and dead letters, redrawn on stderr while ingestion runs."""

    def __init__(self, enabled: bool | None = None, max_partitions: int = 12) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.max_partitions = max_partitions
        self._live: Any = None

    def __enter__(self) -> LiveIngest:
        if self.enabled:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(console=Console(stderr=True), refresh_per_second=4, transient=True)
            self._live.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._live is not None:
            self._live.__exit__(kind, exc, tb)
            self._live = None

    def update(self, stats: IngestStats) -> None:
        if self._live is not None:
            self._live.update(self.render(stats))

    def render(self, stats: IngestStats) -> Any:
        from rich.table import Table

        events_s, samples_s = stats.rate()
        table = Table(title=f"fleetlog ingest → {stats.db}", title_justify="left",
                      show_header=False, box=None)
        table.add_column(style="bold")
        table.add_column(justify="right")
        table.add_row("source", stats.source)
        table.add_row("rate", f"{events_s:,.0f} events/s  {samples_s:,.0f} GPU samples/s")
        table.add_row("landed", f"{stats.events:,} events  {stats.gpu_samples:,} GPU samples")
        table.add_row("dead letters", f"{stats.dead_letters:,}")
        table.add_row("duplicates skipped", f"{stats.duplicates:,}")
        table.add_row("batches", f"{stats.batches:,}")
        lags = sorted(stats.lag.items(), key=lambda kv: -(kv[1] or 0))[: self.max_partitions]
        for name, lag in lags:
            table.add_row(f"lag {name}", "?" if lag is None else f"{lag:,}")
        if len(stats.lag) > self.max_partitions:
            table.add_row("", f"… {len(stats.lag) - self.max_partitions} more partitions")
        return table
