"""The scenarios, in the order they run."""

from __future__ import annotations

import importlib

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


# Where each scenario's class lives (module of fasttun._bench, class name): imported only when it runs.
CLASSES = {
    "pair": ("pair", "PairScenario"),
    "rx": ("rx", "RxScenario"),
    "rx-live": ("rx", "RxLiveScenario"),
    "tx": ("tx", "TxScenario"),
    "latency": ("latency", "LatencyScenario"),
    "forward": ("forward", "ForwardScenario"),
    "tunnel": ("tunnel", "TunnelScenario"),
    "udp": ("udp", "UdpScenario"),
    "soak": ("soak", "SoakScenario"),
}


def make(name: str) -> Scenario:
    if name not in CLASSES:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(KNOWN)}")
    module, cls = CLASSES[name]
    scenario: Scenario = getattr(importlib.import_module(f"fasttun._bench.{module}"), cls)()
    return scenario
