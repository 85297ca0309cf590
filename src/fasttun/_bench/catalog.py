"""The scenarios, in the order they run."""

from __future__ import annotations

from fasttun._bench.scenario import Scenario

NAMES = ("pair", "rx", "rx-live", "tx", "latency", "forward", "tunnel", "udp")
"""What ``fasttun bench`` runs when no scenario is named."""
ONLY_WHEN_NAMED = ("soak",)
"""Scenarios that run only when named: they are long and judge correctness rather than measure speed."""
KNOWN = NAMES + ONLY_WHEN_NAMED


def expand(names: list[str]) -> list[str]:
    """The scenarios to run for the names given on the command line (none: all of NAMES, not the ones that run
    only when named; "rx" brings "rx-live")."""
    out: list[str] = []
    for n in names or NAMES:
        for m in ([n, "rx-live"] if n == "rx" else [n]):
            if m not in out:
                out.append(m)
    return out


def make(name: str) -> Scenario:
    if name == "pair":
        from fasttun._bench.pair import PairScenario
        return PairScenario()
    if name == "rx":
        from fasttun._bench.rx import RxScenario
        return RxScenario()
    if name == "rx-live":
        from fasttun._bench.rx import RxLiveScenario
        return RxLiveScenario()
    if name == "tx":
        from fasttun._bench.tx import TxScenario
        return TxScenario()
    if name == "latency":
        from fasttun._bench.latency import LatencyScenario
        return LatencyScenario()
    if name == "forward":
        from fasttun._bench.forward import ForwardScenario
        return ForwardScenario()
    if name == "tunnel":
        from fasttun._bench.tunnel import TunnelScenario
        return TunnelScenario()
    if name == "udp":
        from fasttun._bench.udp import UdpScenario
        return UdpScenario()
    if name == "soak":
        from fasttun._bench.soak import SoakScenario
        return SoakScenario()
    raise ValueError(f"unknown scenario {name!r}; known: {', '.join(KNOWN)}")
