"""The status page of `lgprune serve`: one HTML document, inline CSS and SVG, no scripts
and nothing fetched from elsewhere (the service may run air-gapped)."""

from __future__ import annotations

import base64
import hashlib
from html import escape
from typing import Any

from lgprune.durations import elapsed
from lgprune.stats import Stats

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #1b1f24; }
h1 { font-size: 1.5rem; margin: 0 0 1rem; } h2 { font-size: 1.1rem; margin: 2rem 0 .5rem; }
.totals { display: flex; gap: 1rem; flex-wrap: wrap; }
.total { border: 1px solid #d0d7de; border-radius: 6px; padding: .6rem 1rem; min-width: 8rem; }
.total b { display: block; font-size: 1.4rem; }
table { border-collapse: collapse; width: 100%; } td, th { padding: .3rem .6rem; text-align: left; }
th { border-bottom: 2px solid #d0d7de; } td { border-bottom: 1px solid #eaeef2; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
.down { background: #ffebe9; border: 1px solid #cf222e; padding: .6rem 1rem; border-radius: 6px; }
.success { color: #1a7f37; } .failure { color: #cf222e; } .running, .stopped, .dry_run { color: #9a6700; }
"""
# The page's Content-Security-Policy: nothing but its own inline style (by hash), no
# scripts, no frames around it.
PAGE_CSP = (
    "default-src 'none'; style-src 'sha256-"
    + base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
    + "'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
OUTCOMES = {"dry_run": "dry run (nothing deleted)"}


def number(n: float) -> str:
    return f"{n:,.0f}"


def mib(n: float) -> str:
    """A size in MiB, or KiB below one MiB."""
    return f"{n / 2**20:,.1f} MiB" if n >= 2**20 else f"{n / 2**10:,.1f} KiB"


def histogram_svg(histogram: dict[str, int]) -> str:
    """Bars of threads per bin of checkpoints per thread."""
    if not histogram:
        return "<p>No threads.</p>"
    width, bar, gap, top = 640, 22, 8, max(histogram.values())
    rows = []
    for i, (label, count) in enumerate(histogram.items()):
        y = i * (bar + gap)
        length = max(2, int((width - 200) * count / top))
        rows.append(
            f'<text x="90" y="{y + 16}" text-anchor="end">{escape(label)}</text>'
            f'<rect x="100" y="{y}" width="{length}" height="{bar}" fill="#0969da">'
            f"<title>{escape(label)} checkpoints: {count} threads</title></rect>"
            f'<text x="{106 + length}" y="{y + 16}">{number(count)}</text>'
        )
    height = len(histogram) * (bar + gap)
    return (
        f'<svg role="img" aria-label="threads by checkpoints per thread" width="{width}" '
        f'height="{height}" font-size="13" xmlns="http://www.w3.org/2000/svg">{"".join(rows)}</svg>'
    )


def sweeps_table(sweeps: list[dict[str, Any]]) -> str:
    if not sweeps:
        return "<p>No sweep has run in this process yet.</p>"
    rows = "".join(
        f"<tr><td>{escape(s['started'] or '')}</td><td>{escape(s['trigger'])}</td>"
        f"<td>{escape(s['kind']) if s['calls'] else ''}</td>"
        f'<td class="{escape(s["outcome"])}">{escape(OUTCOMES.get(s["outcome"], s["outcome"]))}'
        f"{': ' + escape(s['error']) if s['error'] else ''}</td>"
        f"<td class=n>{elapsed(s['duration'])}</td>"
        f"<td class=n>{'would free ' if s['dry_run'] else ''}{number(s['keys_deleted'])}</td>"
        f"<td class=n>{number(s['threads_visited'])}</td></tr>"
        for s in sweeps
    )
    return (
        "<table><tr><th>started (UTC)</th><th>by</th><th>kind</th><th>outcome</th><th class=n>duration</th>"
        f"<th class=n>keys freed</th><th class=n>thread visits</th></tr>{rows}</table>"
    )


def render_status(
    *,
    stats: Stats | None,
    keep: int,
    trouble: str | None,
    sweeps: list[dict[str, Any]],
    next_sweep: str | None,
    schedule: str | None,
    refreshed: str | None = None,
) -> str:
    """The whole page."""
    parts = [
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>lgprune</title><style>{STYLE}</style>"
    ]
    parts.append("</head><body><h1>lgprune</h1>")
    if trouble is not None:  # "Redis does not answer: ..." or "the store is not ready: ..."
        parts.append(f'<p class="down" id="trouble">{escape(trouble[:1].upper() + trouble[1:])}</p>')
    if stats is not None:
        totals = [
            ("threads", number(stats.threads)),
            ("checkpoints", number(stats.checkpoints)),
            ("writes", number(stats.writes)),
            ("keys", number(stats.keys)),
            ("memory", mib(stats.used_memory)),
            (f"a sweep with keep {keep} frees", f"{number(stats.sweep_keys)} keys"),
        ]
        parts.append('<div class="totals">')
        parts += [
            f'<div class="total" id="total-{i}">{escape(k)}<b>{v}</b></div>'
            for i, (k, v) in enumerate(totals)
        ]
        parts.append("</div>")
        if refreshed is not None:
            parts.append(f'<p id="refreshed">As of {escape(refreshed)} (refreshed in the background).</p>')
        parts.append("<h2>Checkpoints per thread</h2>")
        parts.append(histogram_svg(stats.histogram))
        parts.append("<h2>Biggest threads</h2>")
        if stats.top:
            rows = "".join(
                f"<tr><td>{escape(t.thread_id)}</td><td class=n>{'≤ ' if not t.exact else ''}"
                f"{number(t.checkpoints)}</td><td class=n>{mib(t.bytes)}</td></tr>"
                for t in stats.top
            )
            parts.append(
                "<table><tr><th>thread</th><th class=n>checkpoints</th><th class=n>memory (est.)</th></tr>"
                f"{rows}</table>"
            )
        else:
            parts.append("<p>No threads.</p>")
        parts += [f"<p>{escape(note)}</p>" for note in stats.notes]
    parts.append("<h2>Sweeps</h2>")
    if schedule is not None:
        parts.append(
            f"<p>Scheduled: {escape(schedule)}; next at "
            f"{escape(next_sweep or 'the end of the current one')}.</p>"
        )
    else:
        parts.append("<p>No scheduled sweep (start lgprune serve with --sweep-keep and --sweep-every).</p>")
    parts.append(sweeps_table(sweeps))
    parts.append("</body></html>")
    return "".join(parts)
