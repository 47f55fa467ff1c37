"""Streamed exports of transcripts: thousands of calls never sit in memory at once."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any
from uuid import UUID

from django.http import StreamingHttpResponse
from django.utils import timezone

from calls.selectors import EXPORT_FIELDS, export_rows


class _Line:
    """A file-like object for csv.writer that hands back what was written."""

    def write(self, value: str) -> str:
        return value


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    return value


# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    """A CSV cell that a spreadsheet shows as text: what callers said is never a formula.

    A text starting like a formula gets a leading apostrophe (OWASP's advice); numbers and
    dates are left alone. The JSON export keeps the exact text.
    """
    value = _plain(value)
    if isinstance(value, list):  # tool calls: one JSON cell, empty when there were none
        value = json.dumps(value) if value else ""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def csv_lines(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    writer = csv.writer(_Line())
    yield writer.writerow(EXPORT_FIELDS)
    for row in rows:
        yield writer.writerow([_cell(row[field]) for field in EXPORT_FIELDS])


def json_lines(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    """A JSON array written element by element."""
    yield "["
    for n, row in enumerate(rows):
        yield ("," if n else "") + "\n" + json.dumps({k: _plain(v) for k, v in row.items()})
    yield "\n]\n"


def export_response(*, call_ids: Iterable[int], fmt: str) -> StreamingHttpResponse:
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    rows = export_rows(call_ids=call_ids)
    if fmt == "json":
        response = StreamingHttpResponse(json_lines(rows), content_type="application/json")
    else:
        response = StreamingHttpResponse(csv_lines(rows), content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="vantum-transcripts-{stamp}.{fmt}"'
    return response
