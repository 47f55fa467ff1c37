"""The call console page: talk to the agent from a browser."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from calls.engines import get_engines
from llm.demo import DEMO_LABEL


def console(request: HttpRequest) -> HttpResponse:
    engines = get_engines()
    demo_mode = settings.VANTUM_LLM.demo_mode
    model_label = DEMO_LABEL if demo_mode else settings.VANTUM_LLM.params.model
    context = {
        "demo_mode": demo_mode,
        "model_label": model_label,
        "tts_engine": engines.speech.name,
        "stt_engine": engines.transcriber.name if engines.transcriber else "not configured",
        "stt_available": engines.transcriber is not None,
        "voices": [{"id": v.id, "label": v.label} for v in engines.speech.voices()],
    }
    return render(request, "console.html", context)
