"""What a scenario is: a name, whether it needs root, and the variants it measures (one of them the baseline)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from typing import Optional, Protocol

from fasttun._bench.results import Sample
from fasttun._bench.system import Baselines


@dataclasses.dataclass
class Settings:
    seconds: float
    """How long one run of one variant measures."""
    repeat: int
    size: int
    """IP packet size in bytes for pair, rx and tx."""
    batch: int
    """The reader's batch size (and the size of the batches pair and tx send)."""
    smoke: bool
    baselines: Baselines


@dataclasses.dataclass
class Variant:
    name: str
    run: Callable[[], Sample]
    """One measurement (the runner calls it once per repeat, alternating with the other variants)."""
    baseline: bool = False
    missing: Optional[str] = None
    """Why this variant cannot run here (a baseline that cannot be built, python-pytun not installed)."""
    note: str = ""
    """What a reader of its numbers must know (udp under Wine: a smoke test only); shown with the row."""


class Scenario(Protocol):
    name: str
    needs_root: bool
    key: str
    """The number the ratio to the baseline is computed on ("pps", or "p50_us" for latency)."""
    summary: str

    def variants(self, settings: Settings, stack: contextlib.ExitStack) -> list[Variant]:
        """Sets up what the runs share (namespaces, registered on stack for removal) and returns the variants."""
        ...


def pytun_missing() -> Optional[str]:
    try:
        import pytun  # noqa: F401
    except ImportError:
        return "python-pytun is not installed (pip install python-pytun)"
    return None


class Described:
    """A scenario class's description, given as class keywords where it is declared:
    ``class TxScenario(Described, name="tx", needs_root=True, key="pps", summary="...")``; a keyword left out is
    inherited. These are the attributes the Scenario protocol reads."""

    name: str
    needs_root: bool
    key: str
    summary: str

    def __init_subclass__(cls, *, name: Optional[str] = None, needs_root: Optional[bool] = None,
                          key: Optional[str] = None, summary: Optional[str] = None) -> None:
        super().__init_subclass__()
        for attr, value in (("name", name), ("needs_root", needs_root), ("key", key), ("summary", summary)):
            if value is not None:
                setattr(cls, attr, value)
