"""What the benchmark report takes from ``fasttun info`` (fasttun._info owns the facts and their printing)."""

from __future__ import annotations

from fasttun._info import platform_text

__all__ = ["platform_text"]
