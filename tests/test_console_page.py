"""The console page as served by Django."""

import dataclasses

from django.contrib.staticfiles import finders


def test_the_console_shows_the_engines_and_the_demo_banner(client):
    response = client.get("/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-testid="demo-banner"' in html
    assert "not a language model" in html
    assert "Demo responder (scripted, not a language model)" in html


def test_with_a_model_configured_there_is_no_demo_banner(client, settings):
    settings.VANTUM_LLM = dataclasses.replace(settings.VANTUM_LLM, api_key="sk-test")
    html = client.get("/").content.decode()
    assert 'data-testid="demo-banner"' not in html
    assert "gpt-4.1-2025-04-14" in html


def test_every_static_file_the_page_uses_exists():
    for name in (
        "console/app.js",
        "console/msgpack.js",
        "console/recorder-worklet.js",
        "console/console.css",
    ):
        assert finders.find(name), name
