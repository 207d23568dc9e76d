"""Sample batches are cloned from validated templates: they must still be valid, and independent."""

from __future__ import annotations

from msgspec.structs import asdict

from fleetlog.ingest import contract as c


def test_every_sample_batch_passes_the_contracts_construction_checks(simulate_run) -> None:
    # host_hw takes nodes off the bus, so the rack layout (and its templates) is rebuilt.
    run = simulate_run("host_hw", fault_rate=20.0)
    rows = {}
    for event in run.of(c.GpuSampled, c.PortSampled):
        payload = event.payload
        rebuilt = type(payload)(**asdict(payload))  # runs __post_init__'s validation
        assert rebuilt == payload
        assert c.decode(c.encode(event)) == event
        if isinstance(payload, c.GpuSampled):
            rows[event.time_us] = rows.get(event.time_us, 0) + payload.rows
    assert len(set(rows.values())) > 1, "no scrape with a GPU missing: the test lost its point"


def test_each_event_owns_its_columns_dict(simulate_run) -> None:
    run = simulate_run("quiet")
    by_key: dict[str, list[c.Envelope]] = {}
    for event in run.of(c.GpuSampled, c.PortSampled):
        by_key.setdefault(event.key, []).append(event)
    for events in by_key.values():
        dicts = [e.payload.columns for e in events]  # type: ignore[attr-defined]
        assert len({id(d) for d in dicts}) == len(dicts)
