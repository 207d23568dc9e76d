"""What the network categories do: a flapping cable, a dying leaf switch (``network``), a
failing host NIC (``nic``), from the switches' port counters (docs/faults.md). Each takes the
fault's ``Shape``: the template's one look, or the wide shapes' precursors, lags and spreads."""

from __future__ import annotations

from typing import Final

from fleetlog.generators.faults import Fault
from fleetlog.generators.shapes import Shape
from fleetlog.generators.steps import (
    add_note,
    at_or_now,
    between,
    draw,
    draw_rates,
    indices,
    jitter,
    lead_us,
    precursor,
    repair_time,
    us,
)
from fleetlog.generators.telemetry import Overlay
from fleetlog.generators.world import World
from fleetlog.ingest import contract as c

NETWORK_FAILURE: Final = (1, "NCCL error: remote process exited or there was a network error")
# A flapping cable: how many more bursts of flaps after the first (equally likely), and the quiet
# between two bursts (the link retrains and runs clean for a while, then flaps again).
CABLE_EXTRA_BURSTS: Final = (0, 0, 1, 2, 3)
CABLE_BURST_GAP_S: Final = (20 * 60.0, 150 * 60.0)


def network(sim: World, f: Fault, shape: Shape) -> None:
    (_leaf_down if f.variant == "switch" else _cable)(sim, f, shape)


def _cable(sim: World, f: Fault, shape: Shape) -> None:
    tel, sched, port, node = sim.tel, sim.sched, f.port, f.node
    sim.injector.hold_nodes(f, [node])
    rail = f.gpu % sim.topo.gpus_per_node
    f.touch(sim.topo.nic_entity(node, rail))
    t0 = sim.next_tick(sim.now_us)
    errors = not shape.chance(sim.rng_fault, "precursor_missing")
    first_flap = sim.now_us
    if errors:
        first_flap = t0 + lead_us(sim, shape, "network", "lead") + jitter(sim)
    else:
        add_note(shape, f, "no precursor")
    down_us = us(max(draw(sim, shape, "network", "down"), 1.5 * sim.config.interval_s))

    def flap_series(first: int, count: int) -> list[int]:
        flaps = [first]
        for _ in range(count - 1):
            flaps.append(flaps[-1] + down_us + us(draw(sim, shape, "network", "flap_gap")))
        return flaps

    # A flapping cable flaps in bursts: quiet for a while after the first (the link retrains),
    # then again, until it is replaced. Each burst is the same fault episode.
    bursts = [(t0, flap_series(first_flap, int(draw(sim, shape, "network", "flaps"))))]
    for _ in range(int(sim.rng_fault.choice(CABLE_EXTRA_BURSTS))):
        quiet_from = bursts[-1][1][-1] + between(sim, *CABLE_BURST_GAP_S)
        again = flap_series(quiet_from, int(sim.rng_fault.integers(1, 4)) + 1)
        bursts.append((quiet_from - between(sim, 60, 180), again))
    if errors:
        symbol = draw_rates(sim, shape, "network", ("symbol_start", "symbol_end"))
        recovery = (draw_rates(sim, shape, "network", ("recovery_start", "recovery_end"))
                    if shape.chance(sim.rng_fault, "cable_recovery_errors") else None)
        for i, (start, burst) in enumerate(bursts):
            precursor(sim, f, shape, "port_counter", "symbol_error", port, start, burst[-1],
                       symbol, note=i == 0)
            if recovery is not None:
                precursor(sim, f, shape, "port_counter", "link_error_recovery", port, start,
                           burst[-1], recovery, note=i == 0)
        slowdown = draw(sim, shape, "network", "slowdown")
        if slowdown > 1.01:
            tel.add(Overlay(f, "slow", indices(), t0, t0, clock=1.0 / slowdown, nodes=(node,)))
        f.symptom(t0)
    flaps = [t for _start, burst in bursts for t in burst]
    f.detail = (f"cable: errors for {(first_flap - t0) / 6e7:.0f} min, {len(flaps)} flaps in "
                f"{len(bursts)} burst(s)")
    f.end_us = repair_time(sim, f, flaps[-1])

    def down(first: bool, last: bool) -> None:
        tel.port_state[port] = c.PORT_STATE_DOWN
        tel.bump_port("link_downed", [port])
        f.symptom(sim.next_tick(sim.now_us))
        if first:
            tel.clear(f, "slow")
            sched.drain([node])
            code, reason = NETWORK_FAILURE
            sim.after(us(draw(sim, shape, "network", "fail_after")),
                      lambda: sched.fail_on([node], code, reason, f))
        if not last:
            sim.after(down_us, up)

    def up() -> None:
        tel.port_state[port] = c.PORT_STATE_ACTIVE
        tel.bump_port("link_error_recovery", [port])

    for i, t in enumerate(flaps):
        sim.at(t, lambda i=i: down(i == 0, i == len(flaps) - 1))  # type: ignore[misc]

    def repair() -> None:
        tel.port_state[port] = c.PORT_STATE_ACTIVE
        tel.clear(f)
        sched.undrain([node])
        sim.injector.finish(f)

    sim.at(f.end_us, repair)


def _leaf_down(sim: World, f: Fault, shape: Shape) -> None:
    """A leaf switch dies: every port of it down (one rail of every node in the SU), in one
    scrape or (in a share) over a drawn stagger, after symbol errors on some of its ports (in
    a share); every job with a node in the SU fails a little after the first port."""
    tel, sched, topo = sim.tel, sim.sched, sim.topo
    sim.injector.busy_leaves.add(f.leaf)
    node_ports = list(topo.switch_ports(f.leaf))
    ports = node_ports + [int(topo.port_peer[p]) for p in node_ports if topo.port_peer[p] >= 0]
    rail = f.leaf % topo.gpus_per_node
    nodes = list(topo.su_nodes(f.su))
    f.detail = f"leaf switch down: rail {rail} of {len(nodes)} nodes"
    t_down = sim.now_us
    if shape.chance(sim.rng_fault, "switch_precursor"):
        t0 = sim.next_tick(sim.now_us)
        t_down = t0 + lead_us(sim, shape, "network", "switch_lead") + jitter(sim)
        share = draw(sim, shape, "network", "switch_ports")
        count = max(1, round(share * len(node_ports)))
        noisy = sim.rng_fault.choice(node_ports, size=count, replace=False)
        rates = draw_rates(sim, shape, "network", ("switch_symbol_start", "switch_symbol_end"))
        for port in noisy.tolist():
            precursor(sim, f, shape, "port_counter", "symbol_error", int(port), t0, t_down,
                       rates, note=False)
        per_hour = 3600.0 / sim.config.interval_s
        add_note(shape, f, f"symbol errors on {count} of its ports first ({rates[0] * per_hour:.0f}"
                        f" -> {rates[1] * per_hour:.0f} per hour over {(t_down - t0) / 6e7:.1f}"
                        " min)")
        f.end_us = repair_time(sim, f, t_down)
    stagger = 0.0
    if shape.chance(sim.rng_fault, "switch_staggered"):
        stagger = draw(sim, shape, "network", "switch_stagger")
        add_note(shape, f, f"ports down over {stagger:.0f} s")
    offsets = [0] * len(node_ports)
    if stagger > 0:  # the first port goes down when the switch dies, the others within
        offsets = [between(sim, 0, stagger) for _ in node_ports]
        offsets = [o - min(offsets) for o in offsets]
    f.touch(*(topo.link_entity(p) for p in ports))
    f.touch(*(topo.nic_entity(n, rail) for n in nodes))

    def ports_down(which: list[int]) -> None:
        tel.port_state[which] = c.PORT_STATE_DOWN
        tel.bump_port("link_downed", which)
        f.symptom(sim.next_tick(sim.now_us))

    def dies() -> None:
        if stagger > 0:
            for p, offset in zip(node_ports, offsets, strict=True):
                pair = [p] + ([int(topo.port_peer[p])] if topo.port_peer[p] >= 0 else [])
                at_or_now(sim, sim.now_us + offset, lambda pair=pair: ports_down(pair))  # type: ignore[misc]
        else:
            ports_down(ports)
        sched.drain(nodes)
        code, reason = NETWORK_FAILURE
        sim.after(us(draw(sim, shape, "network", "switch_fail_after")),
                  lambda: sched.fail_on(nodes, code, reason, f))
        if f.end_us is None:
            f.end_us = repair_time(sim, f, sim.now_us)

        def repair() -> None:
            tel.port_state[ports] = c.PORT_STATE_ACTIVE
            sched.undrain(nodes)
            sim.injector.finish(f)

        sim.at(max(f.end_us, sim.now_us + us(stagger) + 1), repair)

    at_or_now(sim, t_down, dies)


def nic(sim: World, f: Fault, shape: Shape) -> None:
    tel, sched, port, node = sim.tel, sim.sched, f.port, f.node
    sim.injector.hold_nodes(f, [node])
    f.touch(sim.topo.link_entity(port))
    t_down = sim.now_us
    if shape.chance(sim.rng_fault, "precursor_missing"):
        add_note(shape, f, "no precursor")
    else:
        rates = draw_rates(sim, shape, "nic", ("errors_start", "errors_end"))
        t0 = sim.next_tick(sim.now_us)
        t_down = t0 + lead_us(sim, shape, "nic", "lead") + jitter(sim)
        precursor(sim, f, shape, "port_counter", "rcv_errors", port, t0, t_down, rates)
    f.end_us = repair_time(sim, f, t_down)

    def down() -> None:
        tel.clear(f)
        tel.port_state[port] = c.PORT_STATE_DOWN
        tel.bump_port("link_downed", [port])
        f.symptom(sim.next_tick(sim.now_us))
        sched.drain([node])
        code, reason = NETWORK_FAILURE
        sim.after(us(draw(sim, shape, "nic", "fail_after")),
                  lambda: sched.fail_on([node], code, reason, f))

    def repair() -> None:
        tel.port_state[port] = c.PORT_STATE_ACTIVE
        sched.undrain([node])
        sim.injector.finish(f)

    sim.at(t_down, down)
    sim.at(f.end_us, repair)
