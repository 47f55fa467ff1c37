"""The metrics dashboard: figures over a window of days, and the SVG bars that show them."""

from __future__ import annotations

import statistics
from datetime import date, datetime, timedelta
from typing import Any

from django.db.models import Count, Q
from django.db.models.functions import TruncDate
from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from calls.models import Call, Message, Role, TurnMetrics


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bar_chart(
    series: list[tuple[str, float]],
    *,
    width: int = 640,
    height: int = 170,
    unit: str = "",
    color: str = "#417690",
) -> SafeString:
    """An inline SVG bar chart (no script, no CDN): a value above each bar, its label below."""
    top = max((value for _, value in series), default=0) or 1
    plot = height - 40
    step = width / max(len(series), 1)
    bar_width = max(4.0, step * 0.6)
    parts = [
        f'<svg class="vv-chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">'
    ]
    parts.append(f'<line x1="0" y1="{plot + 20}" x2="{width}" y2="{plot + 20}" stroke="#ccc"/>')
    for index, (label, value) in enumerate(series):
        bar_height = plot * value / top
        x = index * step + (step - bar_width) / 2
        y = 20 + plot - bar_height
        shown = f"{value:.0f}{unit}" if value else "0"
        middle = x + bar_width / 2
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_width:.1f}" height="{bar_height:.1f}" '
            f'fill="{color}" rx="2"/>'
        )
        parts.append(
            f'<text x="{middle:.1f}" y="{y - 4:.1f}" font-size="11" text-anchor="middle">{shown}</text>'
        )
        parts.append(
            f'<text x="{middle:.1f}" y="{height - 4}" font-size="11" text-anchor="middle" fill="#555">'
            f"{escape(label)}</text>"
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))


def peak_concurrency(intervals: list[tuple[datetime, datetime | None]], now: datetime) -> int:
    events = []
    for start, end in intervals:
        events.append((start, 1))
        events.append((end or now, -1))
    events.sort(key=lambda e: (e[0], e[1]))
    current = peak = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


def dashboard_data(*, days: int = 7) -> dict[str, Any]:
    now = timezone.now()
    since = now - timedelta(days=days)
    calls = Call.objects.filter(started_at__gte=since)
    turns = Message.objects.filter(call__started_at__gte=since, role=Role.ASSISTANT)
    per_day_calls = dict(
        calls.annotate(day=TruncDate("started_at"))
        .values_list("day")
        .annotate(n=Count("id"))
        .values_list("day", "n")
    )
    per_day_turns = dict(
        turns.annotate(day=TruncDate("created_at"))
        .values_list("day")
        .annotate(n=Count("id"))
        .values_list("day", "n")
    )
    day_list = [(since + timedelta(days=i + 1)).date() for i in range(days)]
    label = date.strftime
    total_turns = turns.count()
    fallback_turns = turns.filter(fallback_tier__isnull=False).count()
    tiers = dict(
        turns.filter(fallback_tier__isnull=False).values_list("fallback_tier").annotate(n=Count("id"))
    )
    metrics = TurnMetrics.objects.filter(created_at__gte=since).values_list(
        "first_token_ms", "first_chunk_ms", "first_audio_ms"
    )
    columns = list(zip(*metrics, strict=False)) or [(), (), ()]
    latency = {}
    for name, values in zip(("first token", "first chunk", "first audio"), columns, strict=True):
        present = [v for v in values if v is not None]
        latency[name] = {"p50": percentile(present, 0.5), "p95": percentile(present, 0.95), "n": len(present)}
    versions = (
        calls.values("prompt_version__number")
        .annotate(
            calls=Count("id", distinct=True),
            turns=Count("messages", filter=Q(messages__role=Role.ASSISTANT)),
            fallbacks=Count("messages", filter=Q(messages__fallback_tier__isnull=False)),
            interrupted=Count("messages", filter=Q(messages__interrupted=True)),
        )
        .order_by("-prompt_version__number")
    )
    version_rows = []
    for row in versions:
        audio = [
            v
            for v in TurnMetrics.objects.filter(
                created_at__gte=since, message__call__prompt_version__number=row["prompt_version__number"]
            ).values_list("first_audio_ms", flat=True)
            if v is not None
        ]
        version_rows.append(
            {
                **row,
                "fallback_rate": 100 * row["fallbacks"] / row["turns"] if row["turns"] else 0,
                "first_audio_p50": statistics.median(audio) if audio else None,
            }
        )
    audio = latency["first audio"]
    first_audio_summary = f"{audio['p50']:.0f} / {audio['p95']:.0f} ms" if audio["p50"] is not None else "—"
    return {
        "days": days,
        "first_audio_summary": first_audio_summary,
        "calls": calls.count(),
        "turns": total_turns,
        "success_rate": 100 * (total_turns - fallback_turns) / total_turns if total_turns else None,
        "tiers": {tier: tiers.get(tier, 0) for tier in (1, 2, 3)},
        "tiers_chart": bar_chart(
            [(f"tier {t}", tiers.get(t, 0)) for t in (1, 2, 3)], width=300, color="#c47f00"
        ),
        "calls_chart": bar_chart([(label(d, "%b %d"), per_day_calls.get(d, 0)) for d in day_list]),
        "turns_chart": bar_chart(
            [(label(d, "%b %d"), per_day_turns.get(d, 0)) for d in day_list], color="#5b8c51"
        ),
        "latency": latency,
        "latency_chart": bar_chart(
            [(f"{k.split()[-1]} p{q}", v[f"p{q}"] or 0) for k, v in latency.items() for q in (50, 95)],
            width=480,
            unit=" ms",
        ),
        "peak_concurrent": peak_concurrency(list(calls.values_list("started_at", "ended_at")), now),
        "versions": version_rows,
    }
