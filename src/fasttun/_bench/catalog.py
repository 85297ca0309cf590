"""The scenarios, in the order they run."""

from __future__ import annotations

from fasttun._bench.scenario import Scenario

NAMES = ("pair", "rx", "rx-live", "tx", "latency", "forward", "tunnel")


def expand(names: list[str]) -> list[str]:
    """The scenarios to run for the names given on the command line (none: all; "rx" brings "rx-live")."""
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
    raise ValueError(f"unknown scenario {name!r}; known: {', '.join(NAMES)}")
