"""Dialing in Dramatiq workers on the Redis we already run (``REDIS_URL``).

Why Dramatiq: a maintained task queue with a Redis broker (no new server), messages acked
only after the actor finishes (a worker killed mid-task is redelivered, never lost), and
delayed messages for the campaign's next pass. The queue only triggers work: the database
is the source of truth (``Lead`` state machine, row locks in ``services.leads_claim``), so
a redelivered or duplicated message never dials a lead twice, and the concurrency limit and
calling hours hold across any number of worker processes and machines.

Run workers with ``manage.py dial_worker``. Without ``REDIS_URL`` messages go to an
in-memory stub broker and nothing is dialed (the admin says so).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import dramatiq
from django.conf import settings
from django.utils import timezone
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

from telephony import services

logger = logging.getLogger(__name__)


# Of every million broker commands, how many also run the queue's maintenance (requeueing
# the messages of workers whose heartbeat stopped). Dramatiq's default, 1,000, means one
# maintenance in ~500 s with two idle workers: a killed worker's delayed "next pass" would
# stall its campaign for minutes. One command in ten costs a short Lua script.
MAINTENANCE_CHANCE = 100_000


def _broker() -> dramatiq.Broker:
    if settings.REDIS_URL:
        return RedisBroker(
            url=settings.REDIS_URL,
            namespace="vantum-dialing",
            heartbeat_timeout=int(settings.TELEPHONY_WORKER_HEARTBEAT_SECONDS * 1000),
            maintenance_chance=MAINTENANCE_CHANCE,
        )
    return StubBroker()


broker = _broker()
dramatiq.set_broker(broker)


def queue_ready() -> bool:
    return not isinstance(broker, StubBroker)


@dramatiq.actor(max_retries=3, min_backoff=2000, time_limit=120_000)
def dial_campaign(campaign_id: int, dial_pass: int | None = None) -> None:
    """One dialing pass: settle stuck leads, claim what the limit and hours allow, place
    those calls; then schedule the next pass while the campaign is active.

    ``dial_pass`` ties the pass to one chain (``services.campaign_dialing_start``): a pass
    of an older chain ends here, and of duplicates only one schedules the next pass."""
    current = services.campaign_pass_current(campaign_id=campaign_id, dial_pass=dial_pass)
    if current is None:
        logger.info("campaign=%s pass %s not run: stopped or out of date", campaign_id, dial_pass)
        return
    now = timezone.now()
    services.leads_reconcile_stuck(now=now)
    for phone_call_id in services.leads_claim(campaign_id=campaign_id, now=now):
        services.phone_call_place(phone_call_id=phone_call_id)
    tick = settings.TELEPHONY_DIAL_TICK_SECONDS
    next_pass = services.campaign_pass_schedule_next(
        campaign_id=campaign_id, dial_pass=current, due_at=timezone.now() + timedelta(seconds=tick)
    )
    if next_pass is not None:
        dial_campaign.send_with_options(args=(campaign_id, next_pass), delay=int(tick * 1000))


def overdue_seconds() -> float:
    """How late a campaign's next pass may be before the watchdog restarts its chain: a few
    ticks and a minute (a pass may be slow or retrying; restarting one that was only late
    is harmless, its chain then ends at its next pass)."""
    return 3 * settings.TELEPHONY_DIAL_TICK_SECONDS + 60


def dialing_watchdog(*, now: datetime | None = None) -> int:
    """Restart the active campaigns that have no dialing pass coming (``dial_worker`` runs
    this at start and every tick). Returns how many were restarted."""
    restarted = services.campaigns_dialing_overdue(
        now=now or timezone.now(), overdue_seconds=overdue_seconds()
    )
    for campaign_id, dial_pass in restarted:
        dial_campaign.send(campaign_id, dial_pass)
    return len(restarted)


@dramatiq.actor(max_retries=3, min_backoff=2000, time_limit=60_000)
def dial_lead(lead_id: int) -> None:
    """ "Call this prospect": the one lead, through the same claim (limit, hours, DNC)."""
    from telephony.models import Lead

    lead = Lead.objects.get(pk=lead_id)
    for phone_call_id in services.leads_claim(
        campaign_id=lead.campaign_id, now=timezone.now(), lead_ids=[lead_id]
    ):
        services.phone_call_place(phone_call_id=phone_call_id)
