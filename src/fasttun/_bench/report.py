"""The results as a table (stdout) and as JSON."""

from __future__ import annotations

import datetime
import json
import os
import statistics
import sys
from typing import Any, Optional

import fasttun
from fasttun._info import platform_text
from fasttun._bench.results import OK, Row
from fasttun._bench.scenario import Settings

_EXTRA_FORMATS = {
    "p50_us": "p50 {:.0f} us",
    "p99_us": "p99 {:.0f} us",
    "idle_cpu_pct": "idle CPU {:.1f}%",
    "loss_pct": "loss {:.1f}%",
    "offered_pps": "offered {:,.0f} pps",
    "kernel_drops": "kernel drops {:,.0f}",
    "drop_pct": "dropped {:.1f}%",
    "delivered_pct": "delivered {:.0f}%",
    "drained_pct": "drained {:.0f}%",
    "retransmits": "retransmits {:,.0f}",
    "tunnel_cpu_s_per_gb": "tunnel CPU {:.2f} s/GB",
    "host_cpu_s_per_gb": "host CPU {:.2f} s/GB",
    "reader_sleeps_per_s": "reader sleeps {:,.0f}/s",
    "soak_corrupt": "corrupt {:,.0f}",
    "soak_out_of_order": "duplicated or reordered {:,.0f}",
    "soak_missing": "missing {:,.0f}",
    "soak_dropped": "counted as dropped {:,.0f}",
    "rss_growth_kib": "RSS {:+,.0f} KiB after warm-up",
    "datagrams_per_send_call": "{:.1f} datagrams/send call",
    "datagrams_per_receive_call": "{:.1f} datagrams/receive call",
}


def _num(value: Optional[float], fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def details(row: Row) -> str:
    if row.status != OK:
        return f"{row.status}: {row.reason}"
    parts = [_EXTRA_FORMATS[k].format(v) for k, v in row.extras().items() if k in _EXTRA_FORMATS]
    if row.baseline:
        parts.insert(0, "baseline")
    elif row.round_ratios:
        r = row.round_ratios
        parts.insert(0, f"per round {statistics.median(r):.2f}x ({min(r):.2f}-{max(r):.2f})")
    if row.note:
        parts.append(row.note)
    return ", ".join(parts)


def table(rows: list[Row]) -> str:
    header = ["scenario", "variant", "packets/s", "Gbit/s", "ratio", "spread", "details"]
    lines = [header]
    for row in rows:
        ratio = "-" if row.ratio is None else f"{row.ratio:.2f}x"
        lines.append([
            row.scenario,
            row.variant,
            _num(row.pps if row.status == OK else None, "{:,.0f}"),
            _num(row.gbps if row.status == OK else None, "{:.3f}"),
            ratio,
            _num(row.spread_pct if row.status == OK else None, "{:.0f}%"),
            details(row),
        ])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    out = []
    for n, line in enumerate(lines):
        cells = [line[i].ljust(widths[i]) if i < 2 else line[i].rjust(widths[i]) for i in range(len(widths))]
        out.append("  ".join(cells + [line[-1]]).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths) + "  " + "-" * 7)
    out.append("")
    out.append("ratio: the median of packets/s relative to the scenario's baseline (forward: of Gbit/s, since a "
               "super-packet counts once; latency: p50 relative to the baseline, lower is better); spread: "
               "(max - min) / median over the repeats; per round: the median (and range) of the ratios of the runs "
               "made side by side in each round.")
    return "\n".join(out)


def document(rows: list[Row], settings: Settings, argv: list[str]) -> dict[str, Any]:
    return {
        "fasttun": fasttun.__version__,
        "command": ["fasttun", *argv],
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform_text(),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "settings": {"seconds": settings.seconds, "repeat": settings.repeat, "size": settings.size,
                     "batch": settings.batch, "smoke": settings.smoke},
        "rows": [row.to_json() for row in rows],
    }


def write_json(path: str, doc: dict[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
