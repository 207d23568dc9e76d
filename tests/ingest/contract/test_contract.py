"""The event contract: round trips, hostile bytes, upcasting."""

from __future__ import annotations

import math

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetlog.ingest import contract as c
from fleetlog.ingest.contract import events as contract_events

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
times = st.integers(min_value=0, max_value=4_102_444_800_000_000)  # up to 2100
floats = st.floats(allow_nan=True, allow_infinity=False, width=32)


@st.composite
def gpu_batches(draw: st.DrawFn) -> c.GpuSampled:
    nodes = draw(st.lists(names, min_size=1, max_size=4))
    counts = [draw(st.integers(0, 8)) for _ in nodes]
    rows = sum(counts)
    gpu = [i for n in counts for i in range(n)]
    picked = draw(st.lists(st.sampled_from([s.column for s in c.GPU_SIGNALS]), unique=True))
    columns = {col: draw(st.lists(floats, min_size=rows, max_size=rows)) for col in picked}
    return c.gpu_batch(nodes, counts, gpu, columns)


@st.composite
def port_batches(draw: st.DrawFn) -> c.PortSampled:
    switches = draw(st.lists(names, min_size=1, max_size=3))
    counts = [draw(st.integers(0, 6)) for _ in switches]
    ports = [p + 1 for n in counts for p in range(n)]
    picked = draw(st.lists(st.sampled_from([s.column for s in c.PORT_SIGNALS]), unique=True))
    columns = {col: draw(st.lists(floats, min_size=len(ports), max_size=len(ports)))
               for col in picked}
    return c.port_batch(switches, counts, ports, columns)


simple_payloads = st.one_of(
    st.builds(c.RackRegistered, rack=names, region=names, pdu=names, cooling_zone=names),
    st.builds(c.NodeRegistered, node=names, rack=names, region=names, vcluster=names,
              gpu_count=st.integers(1, 8), gpu_model=names, nic_count=st.integers(0, 8),
              spare=st.booleans()),
    st.builds(c.SwitchRegistered, switch=names, tier=st.sampled_from(["leaf", "spine"]),
              region=names),
    st.builds(c.LinkRegistered, switch=names, port=st.integers(1, 64),
              peer=names.map(lambda n: f"nic:{n}/0")),
    st.builds(c.XidReported, node=names, gpu=st.none() | st.integers(0, 7), xid=st.integers(1, 200),
              message=st.text(max_size=40), pid=st.none() | st.integers(1, 2**31)),
    st.builds(c.NodeWentDown, node=names, reason=st.text(max_size=20)),
    st.builds(c.NodeCameUp, node=names),
    st.builds(c.NodeMaintenanceStarted, node=names, reason=st.text(max_size=20)),
    st.builds(c.NodeMaintenanceEnded, node=names),
    st.builds(c.JobSubmitted, job=names, gpus=st.integers(8, 16384), vcluster=names,
              model_params_b=st.floats(0, 1000), checkpoint_interval_s=st.floats(60, 7200)),
    st.builds(c.JobPlaced, job=names, nodes=st.lists(names, max_size=5), vcluster=names),
    st.builds(c.JobStepReported, job=names, step=st.integers(0, 10**7),
              step_time_s=st.floats(0, 100), tokens_per_s=st.floats(0, 1e8),
              loss=st.none() | st.floats(0, 20)),
    st.builds(c.JobCheckpointCompleted, job=names, step=st.integers(0, 10**7),
              duration_s=st.floats(0, 3600), size_gb=st.floats(0, 10000)),
    st.builds(c.JobFailed, job=names, step=st.integers(0, 10**7), exit_code=st.integers(-255, 255),
              reason=st.text(max_size=30), lost_s=st.floats(0, 1e5)),
    st.builds(c.JobMigrated, job=names, from_vcluster=names, to_vcluster=names,
              nodes=st.lists(names, max_size=4)),
    st.builds(c.FaultInjected, fault_id=names, category=st.sampled_from(c.ALL_CATEGORIES),
              entity=names.map(lambda n: f"node:{n}"), start_us=times,
              end_us=st.none() | times, affected=st.lists(names.map(lambda n: f"node:{n}"))),
    st.builds(c.IncidentOpened, incident_id=names, start_us=times,
              category=st.sampled_from(c.FAULT_CATEGORIES), root_entity=names.map(
                  lambda n: f"gpu:{n}/0"), confidence=st.floats(0, 1),
              candidates=st.lists(st.builds(c.Candidate, category=names, entity=names,
                                            score=st.floats(0, 1)), max_size=3),
              evidence=st.lists(names, max_size=3)),
    st.builds(c.RecommendationIssued, incident_id=names, target=names, action=names,
              reason=st.text(max_size=30), gpu_hours_saved=st.floats(0, 1e6)),
)

events = st.builds(
    lambda p, t, s: c.make_event(p, time_us=t, source=s),
    st.one_of(simple_payloads, gpu_batches(), port_batches()), times, names,
)


def _same(a: c.Envelope, b: c.Envelope) -> bool:
    # NaN != NaN, so compare the encoded bytes, which are exact.
    return c.encode(a) == c.encode(b)


@settings(max_examples=300)
@given(events)
def test_every_valid_event_survives_msgpack_round_trip(event: c.Envelope) -> None:
    decoded = c.decode(c.encode(event))
    assert isinstance(decoded, c.Envelope), decoded
    assert _same(decoded, event)


@settings(max_examples=300)
@given(events)
def test_every_valid_event_survives_json_round_trip(event: c.Envelope) -> None:
    decoded = c.decode(c.encode_json(event))
    assert isinstance(decoded, c.Envelope), decoded
    assert _same(decoded, event)


@settings(max_examples=500)
@given(st.binary(max_size=512))
def test_any_bytes_decode_to_an_event_or_a_typed_failure(data: bytes) -> None:
    result = c.decode(data)
    assert isinstance(result, c.Envelope | c.DecodeFailure)


@settings(max_examples=300)
@given(events, st.data())
def test_mutated_events_never_raise(event: c.Envelope, data: st.DataObject) -> None:
    raw = bytearray(c.encode(event))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    assert isinstance(c.decode(bytes(raw)), c.Envelope | c.DecodeFailure)


def test_missing_is_distinct_from_zero() -> None:
    batch = c.gpu_batch(["n1"], [2], [0, 1], {"gpu_temp_c": [0.0, math.nan]})
    decoded = c.decode(c.encode(c.make_event(batch, time_us=1, source="t")))
    assert isinstance(decoded, c.Envelope)
    assert isinstance(decoded.payload, c.GpuSampled)
    temps = c.unpack_column(decoded.payload.columns["gpu_temp_c"], c.GPU_SIGNAL_BY_COLUMN[
        "gpu_temp_c"])
    assert temps[0] == 0.0
    assert np.isnan(temps[1])


def test_inconsistent_batch_is_a_payload_failure() -> None:
    good = c.make_event(c.gpu_batch(["n1"], [2], [0, 1], {"power_w": [1.0, 2.0]}), time_us=1,
                        source="t")
    wire = msgspec.msgpack.decode(c.encode(good))
    wire["payload"]["gpu_count"] = [3]
    result = c.decode(msgspec.msgpack.encode(wire))
    assert isinstance(result, c.DecodeFailure)
    assert result.stage == "payload"
    assert result.event_type == "gpu.sampled"
    assert result.event_id == good.id


@pytest.mark.parametrize(
    ("mutate", "stage"),
    [
        (lambda w: w.update(type="gpu.exploded"), "type"),
        (lambda w: w.update(v=99), "version"),
        (lambda w: w.pop("id"), "envelope"),
        (lambda w: w["payload"].update(category="cosmic_rays"), "payload"),
    ],
)
def test_failures_name_their_stage(mutate, stage: str) -> None:
    event = c.make_event(c.FaultInjected(fault_id="f", category="gpu_hw", entity="gpu:n/1",
                                         start_us=1), time_us=1, source="t")
    wire = msgspec.msgpack.decode(c.encode(event))
    mutate(wire)
    result = c.decode(msgspec.msgpack.encode(wire))
    assert isinstance(result, c.DecodeFailure)
    assert result.stage == stage


def test_old_versions_are_upcast_on_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulate a v2 of node.went_down that split `reason` into `cause`; v1 history still reads."""

    class NodeWentDownV2(c.Payload, frozen=True, kw_only=True):
        TYPE = "node.went_down"
        VERSION = 2
        TOPIC = "host"
        node: str
        cause: str

        def default_key(self) -> str:
            return c.node_entity(self.node)

    v1 = c.encode(c.make_event(c.NodeWentDown(node="n7", reason="psu"), time_us=5, source="t"))
    monkeypatch.setitem(c.PAYLOAD_TYPES, "node.went_down", NodeWentDownV2)
    monkeypatch.setitem(contract_events._msgpack_payload, "node.went_down",
                        msgspec.msgpack.Decoder(NodeWentDownV2))
    monkeypatch.setitem(
        c.UPCASTERS, ("node.went_down", 1),
        lambda m: {"node": m["node"], "cause": m.get("reason", "")},
    )
    decoded = c.decode(v1)
    assert isinstance(decoded, c.Envelope)
    assert decoded.v == 2
    assert decoded.payload == NodeWentDownV2(node="n7", cause="psu")


def test_same_fact_same_id() -> None:
    one = c.make_event(c.NodeCameUp(node="n1"), time_us=10, source="sim")
    two = c.make_event(c.NodeCameUp(node="n1"), time_us=10, source="sim")
    other = c.make_event(c.NodeCameUp(node="n1"), time_us=11, source="sim")
    assert one.id == two.id != other.id


def test_entities_and_topics() -> None:
    assert c.gpu_entity("n1", 3) == "gpu:n1/3"
    assert c.link_entity("leaf-01", 7) == "link:leaf-01/7"
    assert c.entity_kind("rack:r01") == "rack"
    with pytest.raises(ValueError, match="not an entity"):
        c.entity_kind("n1")
    assert c.topic_name("gpu", "t1") == "t1.gpu"
    assert c.all_topics()[0] == "fleetlog.inventory"
    for payload_type in c.PAYLOAD_TYPES.values():
        assert payload_type.TOPIC in c.TOPIC_FAMILIES
        assert "." in payload_type.TYPE


def test_naive_datetimes_are_refused() -> None:
    from datetime import UTC, datetime

    assert c.to_us(datetime(2026, 1, 1, tzinfo=UTC)) == 1_767_225_600_000_000
    with pytest.raises(ValueError, match="naive"):
        c.to_us(datetime(2026, 1, 1))


def test_out_of_range_numbers_are_refused_with_the_event_named() -> None:
    event = c.make_event(c.JobStepReported(job="j", step=1, step_time_s=1.0, tokens_per_s=1.0),
                         time_us=5, source="t")
    wire = msgspec.json.decode(c.encode_json(event))
    wire["payload"]["step"] = 2**70
    result = c.decode(msgspec.json.encode(wire))
    assert isinstance(result, c.DecodeFailure)
    assert (result.stage, result.event_id) == ("payload", event.id)
    wire = msgspec.msgpack.decode(c.encode(event))
    wire["time_us"] = 2**63
    result = c.decode(msgspec.msgpack.encode(wire))
    assert isinstance(result, c.DecodeFailure)
    assert "outside 1970..2200" in result.reason


def _v1_sample_message(columns: dict[str, bytes], *, as_json: bool) -> bytes:
    """A gpu.sampled message as version 1 wrote it: ``columns`` as a map of byte strings."""
    payload = {"nodes": ["n1"], "gpu_count": [2], "gpu": b"\x00\x01", "columns": columns}
    envelope = {"id": "old-1", "type": "gpu.sampled", "v": 1, "time_us": 7, "source": "t",
                "key": "node:n1", "payload": payload}
    return (msgspec.json if as_json else msgspec.msgpack).encode(envelope)


@pytest.mark.parametrize("as_json", [False, True])
def test_version_1_sample_batches_are_upcast_to_one_values_buffer(as_json: bool) -> None:
    power = np.array([650.5, np.nan], dtype="<f4").tobytes()
    sbe = np.array([3.0, 4.0], dtype="<f8").tobytes()
    decoded = c.decode(_v1_sample_message({"power_w": power, "ecc_sbe_vol_total": sbe},
                                          as_json=as_json))
    assert isinstance(decoded, c.Envelope) and decoded.v == c.GpuSampled.VERSION == 2
    payload = decoded.payload
    assert isinstance(payload, c.GpuSampled)
    assert payload.signals == ["power_w", "ecc_sbe_vol_total"]
    assert payload.values == power + sbe
    assert payload.columns == {"power_w": power, "ecc_sbe_vol_total": sbe}


def test_a_version_1_column_of_the_wrong_size_is_refused_with_the_reason() -> None:
    short = np.array([1.0], dtype="<f4").tobytes()  # 1 value for 2 rows
    failure = c.decode(_v1_sample_message({"power_w": short}, as_json=False))
    assert isinstance(failure, c.DecodeFailure) and failure.stage == "payload"
    assert "values has 4 bytes, expected 8" in failure.reason


@pytest.mark.parametrize(("signals", "values", "reason"), [
    (["power_w"], b"\x00" * 7, "values has 7 bytes, expected 8"),
    (["watts"], b"\x00" * 8, "unknown column 'watts'"),
    (["power_w", "power_w"], b"\x00" * 16, "listed twice"),
])
def test_sample_values_must_match_their_signals(signals: list[str], values: bytes,
                                                reason: str) -> None:
    payload = {"nodes": ["n1"], "gpu_count": [2], "gpu": b"\x00\x01", "signals": signals,
               "values": values}
    raw = msgspec.msgpack.encode({"id": "x", "type": "gpu.sampled", "v": 2, "time_us": 1,
                                  "source": "t", "key": "node:n1", "payload": payload})
    failure = c.decode(raw)
    assert isinstance(failure, c.DecodeFailure) and reason in failure.reason


def test_content_hash_ids_of_sample_batches_do_not_depend_on_the_wire_version() -> None:
    """Imported files get content-hash ids; re-importing after the version 2 layout must land
    nothing new, so the id is computed from the version 1 form (a map of columns)."""
    import hashlib

    payload = c.gpu_batch(["n1"], [2], [0, 1], {"power_w": [600.0, 610.0],
                                                 "gpu_temp_c": [60.0, 61.0]})
    v1_form = {"nodes": ["n1"], "gpu_count": [2], "gpu": b"\x00\x01",
               "columns": {"gpu_temp_c": np.array([60, 61], "<f4").tobytes(),
                           "power_w": np.array([600, 610], "<f4").tobytes()}}
    expected = hashlib.blake2b(msgspec.msgpack.encode(v1_form) + b"|gpu.sampled|5|import",
                               digest_size=12).hexdigest()
    assert c.make_event(payload, time_us=5, source="import").id == expected


# -- hostile input (issue #21) --------------------------------------------------------------------

def test_an_id_longer_than_the_bound_is_refused_at_the_envelope() -> None:
    """A 1 MiB id would be copied into every place that keeps ids (the ingester's offsets
    sidecar keeps the last 2,048 and is rewritten after every commit)."""
    from fleetlog.ingest.contract import MAX_ID_LENGTH

    payload = c.XidReported(node="n1", gpu=1, xid=79)
    ok = c.make_event(payload, time_us=1, source="t", id="i" * MAX_ID_LENGTH)
    assert c.decode(c.encode(ok)) == ok
    for size in (MAX_ID_LENGTH + 1, 1024 * 1024):
        long = c.make_event(payload, time_us=1, source="t", id="i" * size)
        for data in (c.encode(long), c.encode_json(long)):
            failure = c.decode(data)
            assert isinstance(failure, c.DecodeFailure)
            assert failure.stage == "envelope" and "$.id" in failure.reason
            assert failure.event_id is None


def test_a_dead_letter_keeps_a_bounded_part_of_its_input_and_says_the_size() -> None:
    from fleetlog.ingest.contract.dead_letter import MAX_FIELD, MAX_RAW

    letter = c.DeadLetter(origin="t", stage="type", error="unknown event type",
                          raw=b"x" * (10 * 1024 * 1024), event_type="t" * 100_000,
                          event_id="i" * 100_000)
    assert letter.raw == b"x" * MAX_RAW
    assert letter.error == ("unknown event type (input of 10,485,760 bytes: the first 4,096 "
                            "kept)")
    assert len(letter.event_type or "") == len(letter.event_id or "") == MAX_FIELD
    small = c.DeadLetter(origin="t", stage="envelope", error="bad", raw=b"abc")
    assert (small.raw, small.error) == (b"abc", "bad")
