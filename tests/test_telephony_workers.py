"""Dialing across processes: two ``dial_worker`` processes (Dramatiq on a real
redis-server) share a real PostgreSQL and the loopback fake Twilio. Duplicate messages,
the concurrency limit, the do-not-call list and a worker killed mid-campaign."""

from __future__ import annotations

import signal
import subprocess
import time

import psycopg
import pytest

from telephony.fake_twilio import FakeTwilio
from tests.servers import PYTHON, ROOT, migrate, run_postgres, run_redis, server_env

pytestmark = [pytest.mark.servers, pytest.mark.timeout(240)]

TOKEN = "test-auth-token"

SETUP = """
from telephony.models import Campaign, DoNotCall, Lead, Prospect
c = Campaign.objects.create(name="Workers", active=True, max_concurrent_calls=2,
    calling_hours_start="00:00", calling_hours_end="23:59:59", calling_weekdays="0,1,2,3,4,5,6")
for n in range(1, 8):
    p = Prospect.objects.create(name=f"P{n}", phone=f"+1212555{n:04d}", timezone="America/New_York")
    Lead.objects.create(campaign=c, prospect=p)
DoNotCall.objects.create(phone="+12125550003")
print(c.pk)
"""


def _manage(env: dict[str, str], code: str) -> str:
    done = subprocess.run(
        [PYTHON, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _worker(env: dict[str, str], log) -> subprocess.Popen:
    return subprocess.Popen(
        [PYTHON, "manage.py", "dial_worker", "--threads", "2"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_two_workers_keep_the_limit_skip_do_not_call_and_survive_a_kill(tmp_path):
    fake = FakeTwilio(account_sid="ACtest", auth_token=TOKEN)
    api = fake.start()
    try:
        with run_postgres() as database_url, run_redis() as redis_url:
            env = server_env(
                {
                    "DATABASE_URL": database_url,
                    "REDIS_URL": redis_url,
                    "TWILIO_ACCOUNT_SID": "ACtest",
                    "TWILIO_AUTH_TOKEN": TOKEN,
                    "TWILIO_API_BASE_URL": api,
                    "TWILIO_PUBLIC_BASE_URL": "https://voice.example.com",
                    "TWILIO_FROM_NUMBER": "+14155550000",
                    "TELEPHONY_DIAL_TICK_SECONDS": "0.5",
                    # The killed worker may hold the campaign's next pass: the other one
                    # takes it over once this heartbeat has lapsed.
                    "TELEPHONY_WORKER_HEARTBEAT_SECONDS": "3",
                }
            )
            migrate(env)
            campaign = int(_manage(env, SETUP).splitlines()[-1])
            with open(tmp_path / "a.log", "wb") as log_a, open(tmp_path / "b.log", "wb") as log_b:
                workers = [_worker(env, log_a), _worker(env, log_b)]
                try:
                    # Three passes queued at once (a double click, a redelivery): still two calls.
                    _manage(
                        env,
                        "from telephony import tasks\n"
                        f"for _ in range(3): tasks.dial_campaign.send({campaign})",
                    )
                    assert _wait_for(lambda: len(fake.calls) >= 2, 60)
                    time.sleep(2.0)  # several more passes run on both workers
                    first = sorted(c.to for c in fake.calls.values())
                    assert first == ["+12125550001", "+12125550002"]

                    # A worker dies without warning; the calls end; the other one goes on.
                    workers[0].send_signal(signal.SIGKILL)
                    workers[0].wait(10)
                    sids = " ".join(f"'{sid}'," for sid in fake.calls)
                    _manage(
                        env,
                        "from telephony import services\n"
                        f"for sid in [{sids}]:\n"
                        "    services.phone_call_record_status(call_sid=sid, status='completed')",
                    )
                    assert _wait_for(lambda: len(fake.calls) >= 4, 60)

                    def lead_states() -> dict[str, str]:
                        with psycopg.connect(database_url) as db:
                            return dict(
                                db.execute(
                                    "SELECT p.phone, l.state FROM telephony_lead l "
                                    "JOIN telephony_prospect p ON p.id = l.prospect_id"
                                ).fetchall()
                            )

                    # The worker records a placed call just after Twilio accepted it (slow
                    # on a loaded machine): wait for that, then for more passes to run.
                    assert _wait_for(
                        lambda: [lead_states().get(f"+1212555000{n}") for n in (4, 5)] == ["in_call"] * 2, 60
                    )
                    time.sleep(1.5)
                    numbers = [c.to for c in fake.calls.values()]
                    assert sorted(numbers) == ["+12125550001", "+12125550002", "+12125550004", "+12125550005"]
                    assert len(set(numbers)) == len(numbers)  # nobody dialed twice
                    states = lead_states()
                    assert states["+12125550003"] == "skipped"
                    assert [states[f"+1212555000{n}"] for n in (1, 2, 4, 5)] == [
                        "done",
                        "done",
                        "in_call",
                        "in_call",
                    ]
                    assert [states[f"+1212555000{n}"] for n in (6, 7)] == ["queued", "queued"]
                finally:
                    for worker in workers:
                        if worker.poll() is None:
                            worker.send_signal(signal.SIGTERM)
                    for worker in workers:
                        try:
                            worker.wait(40)
                        except subprocess.TimeoutExpired:
                            worker.kill()
            assert workers[1].returncode == 0, (tmp_path / "b.log").read_text()
    finally:
        fake.stop()
