"""A PostgreSQL outage at a phone call's hang-up loses nothing: the phone call's end, the
lead's outcome and the do-not-call entry are spooled with the call's rows and stored when
the spool is replayed. The stream consumer runs in this process (Twilio simulator, loopback
fake Twilio REST server, the real OpenAI adapter on the HTTP-level fake model), its Django
connections on a real PostgreSQL that the test stops and starts again."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from pathlib import Path

import dj_database_url
import psycopg
import pytest
from asgiref.sync import SyncToAsync
from channels.db import database_sync_to_async
from django.db import connections
from prometheus_client import REGISTRY

from calls import instances, recorder
from llm.fake_openai import FakeOpenAI, FakeReply, FakeToolCall
from llm.openai_adapter import OpenAIChatProvider
from telephony import services
from telephony.fake_twilio import FakeTwilio
from telephony.models import Campaign, Lead, PhoneCall, Prospect
from telephony.testing import TwilioSimulator, caller_speech
from tests.outage_servers import StoppablePostgres
from tests.servers import migrate, server_env
from tests.support import BeepEngine, CannedTranscriber

pytestmark = [pytest.mark.servers, pytest.mark.timeout(240)]

TOKEN = "test-auth-token"
BASE = "https://voice.example.com"
NUMBER = "+12125550193"


@pytest.fixture(scope="module")
def database():
    postgres = StoppablePostgres()
    postgres.start()
    try:
        migrate(server_env({"DATABASE_URL": postgres.url}))
        yield postgres
    finally:
        postgres.close()


def _drop_default_connection() -> None:
    connections.close_all()
    with contextlib.suppress(AttributeError):  # none opened in this thread
        del connections["default"]


def _drop_default_connections() -> None:
    """In this thread and in the one that runs thread-sensitive database calls of async
    code (connections are per thread): the next query opens one from the settings."""
    _drop_default_connection()
    SyncToAsync.single_thread_executor.submit(_drop_default_connection).result()


@pytest.fixture
def on_postgres(database, django_db_blocker):
    """Django's default connection in this process on the stoppable PostgreSQL (instead of
    the suite's test database), restored afterwards."""
    previous = connections.settings["default"]
    parsed = {"default": dj_database_url.parse(database.url)}
    parsed["default"]["OPTIONS"] = {"connect_timeout": 2}
    connections.settings["default"] = connections.configure_settings(parsed)["default"]
    _drop_default_connections()
    with django_db_blocker.unblock():
        try:
            yield database
        finally:
            connections.settings["default"] = previous
            _drop_default_connections()


@pytest.fixture
def fake_twilio(settings, tmp_path):
    fake = FakeTwilio(account_sid="ACtest", auth_token=TOKEN)
    url = fake.start()
    settings.TWILIO_ACCOUNT_SID = "ACtest"
    settings.TWILIO_AUTH_TOKEN = TOKEN
    settings.TWILIO_PUBLIC_BASE_URL = BASE
    settings.TWILIO_API_BASE_URL = url
    settings.TWILIO_FROM_NUMBER = "+14155550000"
    settings.VAD_ENGINE = "energy"  # the caller's "speech" is a square wave
    settings.VANTUM_SPOOL_DIR = tmp_path / "spool"
    settings.VANTUM_SPOOL_AFTER_SECONDS = 0.5
    yield fake
    fake.stop()


def _place_call() -> int:
    campaign = Campaign.objects.create(
        name="Outage",
        active=True,
        calling_hours_start="00:00",
        calling_hours_end="23:59:59",
        calling_weekdays="0,1,2,3,4,5,6",
    )
    prospect = Prospect.objects.create(name="Ada", phone=NUMBER, timezone="America/New_York")
    Lead.objects.create(campaign=campaign, prospect=prospect)
    [phone_call_id] = services.leads_claim(campaign_id=campaign.pk, now=datetime.now(UTC))
    return services.phone_call_place(phone_call_id=phone_call_id).pk


def _stored(database_url: str, phone_call_id: int) -> tuple:
    """The phone call's end reason and outcome, its lead's state and outcome, how many
    do-not-call entries the agent made for the number, the call's end reason and outcome."""
    with psycopg.connect(database_url) as db:
        return db.execute(
            "SELECT p.end_reason, p.outcome, l.state, l.outcome, "
            "(SELECT count(*) FROM telephony_donotcall WHERE phone = %s AND source = 'agent'), "
            "coalesce(c.end_reason, ''), coalesce(c.outcome, '') "
            "FROM telephony_phonecall p JOIN telephony_lead l ON l.id = p.lead_id "
            "LEFT JOIN calls_call c ON c.session_id = p.session_id WHERE p.id = %s",
            (NUMBER, phone_call_id),
        ).fetchone()


FINISHED = ("agent_ended", "do_not_call", "done", "do_not_call", 1, "agent_ended", "do_not_call")


def _metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def _spool_files(spool: Path) -> list[str]:
    return sorted(path.name for path in spool.glob("*.jsonl"))


async def _heartbeat_replays(spool: Path) -> None:
    """Run the process heartbeat (its own thread, as in a server) until the spool is empty."""
    heartbeat = instances.Heartbeat(interval=0.2)
    heartbeat.start()
    try:
        for _ in range(300):
            if not _spool_files(spool):
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"spool not replayed: {_spool_files(spool)}")
    finally:
        heartbeat.stopping.set()
        await asyncio.to_thread(heartbeat.join, 10)


async def test_a_do_not_call_ending_during_a_database_outage_is_listed_after_recovery(
    on_postgres, fake_twilio, use_engines, tmp_path
):
    lost_before = _metric("vantum_recorder_lost_writes_total")
    model = FakeOpenAI()
    model.script(
        FakeReply(
            text="Understood, I will not call again. ||BREAK|| Goodbye!",
            tool_calls=[
                FakeToolCall("end_call", {"outcome": "do_not_call", "summary": "Asked to be removed"})
            ],
        )
    )
    use_engines(
        chat=OpenAIChatProvider(api_key="sk-test", http_client=model.http_client()),
        speech=BeepEngine(),
        transcriber=CannedTranscriber("Please never call me again."),
    )
    phone_call_id = await database_sync_to_async(_place_call)()
    placed = await database_sync_to_async(PhoneCall.objects.get)(pk=phone_call_id)
    twilio = TwilioSimulator(auth_token=TOKEN, public_base=BASE)
    _, stream = await twilio.answer(
        call_sid=placed.call_sid, direction="outbound-api", to=NUMBER, attempt=str(placed.public_id)
    )
    _, leg = await twilio.open_stream(stream, call_sid=placed.call_sid, speed=20.0)
    await leg.start(stream.parameters)
    await leg.until_replies_played(1)  # the opener
    await twilio.status(call_sid=placed.call_sid, status="completed", attempt=str(placed.public_id))
    assert _stored(on_postgres.url, phone_call_id)[:5] == ("", "", "done", "completed", 0)

    on_postgres.stop()
    try:
        # The prospect asks never to be called again; the agent says goodbye and hangs up.
        await leg.say(caller_speech(0.6))
        await leg.silence(0.8)
        assert await leg.until_closed(timeout=30) == 1000  # the hang-up path ran to its end
        await leg.hang_up()
        assert fake_twilio.hangups == [placed.call_sid]
    finally:
        on_postgres.start()

    spool = tmp_path / "spool"
    [spooled] = spool.glob("*.jsonl")
    lines = spooled.read_text()
    keys = [recorder.decode_line(line)[0] for line in lines.splitlines()]
    assert keys[-1] == "telephony.services:phone_call_finish"  # after the call's own rows
    # Nothing of the ending reached the database yet: it is all in the spool.
    assert _stored(on_postgres.url, phone_call_id) == ("", "", "done", "completed", 0, "", "")

    await _heartbeat_replays(spool)

    assert _stored(on_postgres.url, phone_call_id) == FINISHED
    # Replayed again (as after a crash between storing and removing the file): no change.
    (spool / spooled.name).write_text(lines)
    await _heartbeat_replays(spool)
    assert _stored(on_postgres.url, phone_call_id) == FINISHED
    assert _metric("vantum_recorder_lost_writes_total") == lost_before  # none lost, during or after
