"""The metrics dashboard: business figures and latencies over a window of days, and the
inline SVG charts that show them (no script, no CDN; colours follow the admin theme).

Every figure counts calls in which something was said: empty connections (a reload, a
reconnect) are counted apart, the same way the calls list hides them by default, so a
chart's link opens exactly the calls the bar counts.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django.db.models import Count, Exists, F, OuterRef, Q, Sum
from django.db.models.functions import TruncDate
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from agents.selectors import prompt_split_list
from calls.models import Call, EndReason, Message, Outcome, Role, TurnMetrics

OUTCOME_COLOURS = {
    Outcome.MEETING_BOOKED: "#2e8b57",
    Outcome.CALLBACK: "#3c7fb1",
    Outcome.NOT_INTERESTED: "#b8860b",
    Outcome.NO_DECISION: "#8a8f98",
    Outcome.FAILED: "#c0392b",
    Outcome.DO_NOT_CALL: "#7d3c98",
}
# Wide enough for "Nov 25" at the chart's font size, in viewBox units.
LABEL_SPACING = 56


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion (95% by default), as fractions.

    Unlike the normal approximation it stays inside [0, 1] and is honest for small samples
    (3 bookings in 4 calls is not "75%": it is somewhere between 30% and 95%)."""
    if trials <= 0:
        return None
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def calls_url(**filters: Any) -> str:
    """The calls list filtered like a chart's bar (admin changelist query parameters)."""
    return reverse("admin:calls_call_changelist") + ("?" + urlencode(filters) if filters else "")


def day_filters(day: date) -> dict[str, int]:
    return {"started_at__year": day.year, "started_at__month": day.month, "started_at__day": day.day}


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    href: str = ""
    colour: str = ""


def bar_chart(
    bars: Sequence[Bar | tuple[str, float]],
    *,
    width: int = 460,
    height: int = 170,
    unit: str = "",
    color: str = "#417690",
    title: str = "",
) -> SafeString:
    """An inline SVG bar chart that scales to its box (``width: 100%``; the viewBox keeps
    the proportions). With many bars only every n-th label is drawn so labels never
    overlap, and value labels are dropped when bars are too thin to carry them (each bar
    still has its value as a tooltip). Text colours come from CSS (``.vv-chart text``),
    so they follow the light and dark themes."""
    bars = [bar if isinstance(bar, Bar) else Bar(*bar) for bar in bars]
    top = max((bar.value for bar in bars), default=0) or 1
    plot = height - 44
    step = width / max(len(bars), 1)
    bar_width = max(2.0, step * 0.62)
    label_every = max(1, math.ceil(LABEL_SPACING / step))
    show_values = step >= 26
    parts = [
        f'<svg class="vv-chart" viewBox="0 0 {width} {height}" preserveAspectRatio="xMidYMid meet" '
        f'role="img" aria-label="{escape(title)}">'
    ]
    parts.append(f'<line class="vv-axis" x1="0" y1="{plot + 20}" x2="{width}" y2="{plot + 20}"/>')
    for index, bar in enumerate(bars):
        bar_height = plot * bar.value / top
        x = index * step + (step - bar_width) / 2
        y = 20 + plot - bar_height
        shown = _number(bar.value, unit)
        middle = x + bar_width / 2
        rect = (
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_width:.1f}" height="{max(bar_height, 0):.1f}" '
            f'fill="{bar.colour or color}" rx="2"><title>{escape(bar.label)}: {shown}</title></rect>'
        )
        if bar.href:
            # A transparent full-height target: thin or zero bars stay clickable.
            rect = (
                f'<a href="{escape(bar.href)}"><rect class="vv-hit" x="{index * step:.1f}" y="0" '
                f'width="{step:.1f}" height="{plot + 20}"><title>{escape(bar.label)}: {shown}</title></rect>'
                f"{rect}</a>"
            )
        parts.append(rect)
        if show_values and bar.value:
            parts.append(
                f'<text class="vv-value" x="{middle:.1f}" y="{y - 4:.1f}" text-anchor="middle">{shown}</text>'
            )
    parts.extend(
        _axis_labels(
            [
                (bar.label, index * step + step / 2)
                for index, bar in enumerate(bars)
                if (len(bars) - 1 - index) % label_every == 0
            ],
            height - 6,
            width,
        )
    )
    parts.append("</svg>")
    return mark_safe("".join(parts))


def _axis_labels(labels: Sequence[tuple[str, float]], y: float, width: float) -> list[str]:
    """Labels under their bars, from the newest (rightmost) leftwards, skipping any that
    would touch the one drawn before, and kept inside the chart at either edge."""
    parts: list[str] = []
    left_limit = math.inf
    for text, middle in reversed(labels):
        half = 3.6 * len(text)  # about half the text's width at the chart's 12-unit font
        x, anchor, left, right = middle, "middle", middle - half, middle + half
        if left < 0:
            x, anchor, left, right = 0.0, "start", 0.0, 2 * half
        elif right > width:
            x, anchor, left, right = float(width), "end", width - 2 * half, float(width)
        if right > left_limit - 6:
            continue
        parts.append(
            f'<text class="vv-label" x="{x:.1f}" y="{y}" text-anchor="{anchor}">{escape(text)}</text>'
        )
        left_limit = left
    return parts


def hbar_chart(
    bars: Sequence[Bar], *, width: int = 460, unit: str = "", color: str = "#417690", title: str = ""
) -> SafeString:
    """Horizontal bars for categories (outcomes, end reasons, tiers): the names stay
    readable whatever their length, one row each, the value after the bar."""
    row_height, value_width, char_width = 24, 70, 6.8  # char_width: at the 12-unit font
    longest = max((len(bar.label) for bar in bars), default=0)
    label_width = round(min(max(char_width * longest + 14, 60), width * 0.45))
    fits = int((label_width - 8) / char_width)
    height = row_height * max(len(bars), 1) + 6
    top = max((bar.value for bar in bars), default=0) or 1
    span = width - label_width - value_width
    parts = [
        f'<svg class="vv-chart vv-hbar" viewBox="0 0 {width} {height}" preserveAspectRatio="xMinYMin meet" '
        f'role="img" aria-label="{escape(title)}">'
    ]
    for index, bar in enumerate(bars):
        y = index * row_height + 4
        length = span * bar.value / top
        shown = _number(bar.value, unit)
        rect = (
            f'<rect x="{label_width}" y="{y}" width="{max(length, 0):.1f}" height="{row_height - 8}" '
            f'fill="{bar.colour or color}" rx="2"><title>{escape(bar.label)}: {shown}</title></rect>'
        )
        if bar.href:
            rect = (
                f'<a href="{escape(bar.href)}"><rect class="vv-hit" x="0" y="{y - 3}" width="{width}" '
                f'height="{row_height - 2}"><title>{escape(bar.label)}: {shown}</title></rect>{rect}</a>'
            )
        parts.append(rect)
        middle = y + (row_height - 8) / 2 + 4
        # A name too long for the column is shortened; the bar's tooltip has it whole.
        name = bar.label if len(bar.label) <= fits else bar.label[: fits - 1].rstrip() + "…"
        parts.append(
            f'<text class="vv-label" x="{label_width - 8}" y="{middle:.1f}" text-anchor="end">'
            f"{escape(name)}</text>"
        )
        parts.append(
            f'<text class="vv-value" x="{label_width + length + 6:.1f}" y="{middle:.1f}">{shown}</text>'
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))


def stacked_chart(
    days: Sequence[date],
    series: Sequence[tuple[str, str, dict[date, int], dict[str, Any]]],
    *,
    width: int = 460,
    height: int = 230,
    title: str = "",
) -> SafeString:
    """Stacked bars per day; ``series`` is (name, colour, counts per day, extra filters).
    Each segment links to the calls of that day with the series' filters; a legend below."""
    totals = [sum(counts.get(day, 0) for _, _, counts, _ in series) for day in days]
    top = max(totals, default=0) or 1
    legend_height = 36  # two rows
    plot = height - 44 - legend_height
    step = width / max(len(days), 1)
    bar_width = max(2.0, step * 0.62)
    label_every = max(1, math.ceil(LABEL_SPACING / step))
    parts = [
        f'<svg class="vv-chart" viewBox="0 0 {width} {height}" preserveAspectRatio="xMidYMid meet" '
        f'role="img" aria-label="{escape(title)}">'
    ]
    parts.append(f'<line class="vv-axis" x1="0" y1="{plot + 20}" x2="{width}" y2="{plot + 20}"/>')
    for index, day in enumerate(days):
        x = index * step + (step - bar_width) / 2
        base = 20 + plot
        for name, colour, counts, filters in series:
            value = counts.get(day, 0)
            if not value:
                continue
            segment = plot * value / top
            base -= segment
            href = calls_url(**day_filters(day), **filters)
            parts.append(
                f'<a href="{escape(href)}"><rect x="{x:.1f}" y="{base:.1f}" width="{bar_width:.1f}" '
                f'height="{segment:.1f}" fill="{colour}"><title>{day:%b %d} · {escape(name)}: {value}'
                f"</title></rect></a>"
            )
        if step >= 26 and totals[index]:
            parts.append(
                f'<text class="vv-value" x="{x + bar_width / 2:.1f}" y="{base - 4:.1f}" '
                f'text-anchor="middle">{totals[index]}</text>'
            )

    # Label every n-th day counted from the newest, so today always has its date.
    parts.extend(
        _axis_labels(
            [
                (f"{day:%b %d}", index * step + step / 2)
                for index, day in enumerate(days)
                if (len(days) - 1 - index) % label_every == 0
            ],
            plot + 36,
            width,
        )
    )
    x, row = 0.0, 0
    for name, colour, _, _ in series:
        item_width = 24 + 6.5 * len(name)
        if x and x + item_width > width:  # wrap the legend rather than run off the chart
            x, row = 0.0, row + 1
        y = plot + 48 + 16 * row
        parts.append(
            f'<rect x="{x:.1f}" y="{y}" width="10" height="10" fill="{colour}"/>'
            f'<text class="vv-label" x="{x + 14:.1f}" y="{y + 9}">{escape(name)}</text>'
        )
        x += item_width
    parts.append("</svg>")
    return mark_safe("".join(parts))


def _number(value: float, unit: str) -> str:
    if not value:
        return "0"
    return f"{value:.0f}{unit}" if value >= 10 or value == int(value) else f"{value:.1f}{unit}"


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


def _per_day(queryset, field: str = "started_at") -> dict[date, int]:
    return dict(
        queryset.order_by()
        .annotate(day=TruncDate(field))
        .values_list("day")
        .annotate(n=Count("id"))
        .values_list("day", "n")
    )


def _minutes(value: timedelta | None) -> float:
    return value.total_seconds() / 60 if value else 0.0


def version_comparison(*, calls, since: datetime) -> list[dict[str, Any]]:
    """Prompt versions side by side: outcomes, booking rate with its 95% Wilson interval,
    fallback rate and latency. Booking rate = meetings booked / calls with an outcome."""
    weights = {split.version_id: split.weight for split in prompt_split_list()}
    rows = (
        calls.values("prompt_version_id", "prompt_version__number")
        .annotate(
            calls=Count("id", distinct=True),
            decided=Count("id", filter=~Q(outcome=""), distinct=True),
            booked=Count("id", filter=Q(outcome=Outcome.MEETING_BOOKED), distinct=True),
            callbacks=Count("id", filter=Q(outcome=Outcome.CALLBACK), distinct=True),
            not_interested=Count("id", filter=Q(outcome=Outcome.NOT_INTERESTED), distinct=True),
            failed=Count("id", filter=Q(outcome=Outcome.FAILED), distinct=True),
        )
        .order_by("-prompt_version__number")
    )
    turn_rows = {
        row["call__prompt_version_id"]: row
        for row in Message.objects.filter(call__in=calls, role=Role.ASSISTANT)
        .values("call__prompt_version_id")
        .annotate(
            turns=Count("id"),
            fallbacks=Count("id", filter=Q(fallback_tier__isnull=False)),
            interrupted=Count("id", filter=Q(interrupted=True)),
        )
    }
    result = []
    for row in rows:
        version_id = row["prompt_version_id"]
        turns = turn_rows.get(version_id, {"turns": 0, "fallbacks": 0, "interrupted": 0})
        audio = [
            v
            for v in TurnMetrics.objects.filter(
                created_at__gte=since, message__call__in=calls, message__call__prompt_version_id=version_id
            ).values_list("first_audio_ms", flat=True)
            if v is not None
        ]
        interval = wilson_interval(row["booked"], row["decided"])
        result.append(
            {
                **row,
                **turns,
                "booking_rate": 100 * row["booked"] / row["decided"] if row["decided"] else None,
                "booking_low": 100 * interval[0] if interval else None,
                "booking_high": 100 * interval[1] if interval else None,
                "fallback_rate": 100 * turns["fallbacks"] / turns["turns"] if turns["turns"] else 0,
                "first_audio_p50": statistics.median(audio) if audio else None,
                "first_audio_p95": percentile(audio, 0.95),
                "weight": weights.get(version_id),
                "calls_url": calls_url(prompt_version__id__exact=version_id) if version_id else "",
            }
        )
    return result


_LINK = re.compile(r'<a href="[^"]*">|</a>')


def without_links(chart: SafeString) -> SafeString:
    """The chart with its bars no longer links (for staff who may not open calls: a
    prompt editor compares versions here but reads no transcript)."""
    return mark_safe(_LINK.sub("", chart))  # our own SVG, with its anchors removed


def dashboard_data(*, days: int = 7, links: bool = True) -> dict[str, Any]:
    """The dashboard's figures and charts. ``links``: bars open the matching calls."""
    now = timezone.now()
    since = now - timedelta(days=days)
    window = Call.objects.filter(started_at__gte=since)
    said = Exists(Message.objects.filter(call=OuterRef("pk")))
    calls = window.filter(said)
    empty_calls = window.exclude(said).count()
    turns = Message.objects.filter(call__started_at__gte=since, role=Role.ASSISTANT)
    day_list = [(since + timedelta(days=i + 1)).date() for i in range(days)]
    label = date.strftime
    per_day_calls = _per_day(calls)
    per_day_turns = _per_day(turns, "created_at")
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
    audio = latency["first audio"]
    first_audio_summary = f"{audio['p50']:.0f} / {audio['p95']:.0f} ms" if audio["p50"] is not None else "—"

    # Business figures. Connect time: how long callers were on the line (ended calls).
    ended = calls.filter(ended_at__isnull=False)
    connect = ended.annotate(length=F("ended_at") - F("started_at"))
    connect_total = connect.aggregate(total=Sum("length"))["total"]
    ended_count = ended.count()
    connect_per_day: dict[date, float] = {}
    for day, length in connect.annotate(day=TruncDate("started_at")).values_list("day", "length"):
        connect_per_day[day] = connect_per_day.get(day, 0.0) + _minutes(length)
    outcome_counts = dict(calls.order_by().values_list("outcome").annotate(n=Count("id", distinct=True)))
    decided = sum(n for outcome, n in outcome_counts.items() if outcome)
    booked = outcome_counts.get(Outcome.MEETING_BOOKED, 0)
    booking_interval = wilson_interval(booked, decided)
    outcome_series = [
        (
            str(name),
            OUTCOME_COLOURS[Outcome(value)],
            _per_day(calls.filter(outcome=value)),
            {"outcome__exact": value},
        )
        for value, name in Outcome.choices
    ]
    end_reasons = dict(calls.order_by().values_list("end_reason").annotate(n=Count("id", distinct=True)))
    data = {
        "days": days,
        "first_audio_summary": first_audio_summary,
        "calls": calls.count(),
        "empty_calls": empty_calls,
        "empty_calls_url": calls_url(conversation="empty"),
        "turns": total_turns,
        "success_rate": 100 * (total_turns - fallback_turns) / total_turns if total_turns else None,
        "connect_minutes": _minutes(connect_total),
        "average_call_minutes": _minutes(connect_total) / ended_count if ended_count else None,
        "booked": booked,
        "booked_url": calls_url(outcome__exact=Outcome.MEETING_BOOKED),
        "booking_rate": 100 * booked / decided if decided else None,
        "booking_low": 100 * booking_interval[0] if booking_interval else None,
        "booking_high": 100 * booking_interval[1] if booking_interval else None,
        "outcomes": {value: outcome_counts.get(value, 0) for value in Outcome.values},
        "tiers": {tier: tiers.get(tier, 0) for tier in (1, 2, 3)},
        "tiers_chart": hbar_chart(
            [Bar(f"tier {t}", tiers.get(t, 0)) for t in (1, 2, 3)], color="#c47f00", title="Fallbacks by tier"
        ),
        "calls_chart": bar_chart(
            [Bar(label(d, "%b %d"), per_day_calls.get(d, 0), calls_url(**day_filters(d))) for d in day_list],
            title="Calls per day",
        ),
        "connect_chart": bar_chart(
            [
                Bar(label(d, "%b %d"), round(connect_per_day.get(d, 0.0), 1), calls_url(**day_filters(d)))
                for d in day_list
            ],
            unit=" min",
            color="#6a5acd",
            title="Connect time per day",
        ),
        "outcomes_chart": stacked_chart(day_list, outcome_series, title="Outcomes per day"),
        "outcome_totals_chart": hbar_chart(
            [
                Bar(
                    str(name),
                    outcome_counts.get(value, 0),
                    calls_url(outcome__exact=value),
                    OUTCOME_COLOURS[value],
                )
                for value, name in Outcome.choices
            ],
            title="Outcomes",
        ),
        "end_reasons_chart": hbar_chart(
            [
                Bar(str(name), end_reasons.get(value, 0), calls_url(end_reason__exact=value))
                for value, name in EndReason.choices
            ],
            color="#5f7d95",
            title="End reasons",
        ),
        "turns_chart": bar_chart(
            [Bar(label(d, "%b %d"), per_day_turns.get(d, 0)) for d in day_list],
            color="#5b8c51",
            title="Agent turns per day",
        ),
        "latency": latency,
        "latency_chart": hbar_chart(
            [Bar(f"{k} p{q}", v[f"p{q}"] or 0) for k, v in latency.items() for q in (50, 95)],
            unit=" ms",
            title="Latency",
        ),
        "peak_concurrent": peak_concurrency(list(window.values_list("started_at", "ended_at")), now),
        "versions": version_comparison(calls=calls, since=since),
    }
    if not links:
        data.update({key: without_links(value) for key, value in data.items() if key.endswith("_chart")})
    return data
