"""``manage.py dial_worker``: a Dramatiq worker for the dialing actors (needs REDIS_URL)."""

from __future__ import annotations

import logging
import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import close_old_connections

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Run a dialing worker (Dramatiq on REDIS_URL). Stops cleanly on SIGTERM/SIGINT."

    def add_arguments(self, parser):
        parser.add_argument("--threads", type=int, default=4)

    def handle(self, *args, threads: int, **options):
        import dramatiq

        from telephony import tasks

        if not tasks.queue_ready():
            raise CommandError("REDIS_URL is not set: there is no queue to work on.")
        worker = dramatiq.Worker(tasks.broker, worker_threads=threads)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        worker.start()
        self.stdout.write(f"dialing worker: {threads} threads on {tasks.broker.__class__.__name__}")
        # The watchdog: an active campaign whose dialing chain died (a pass out of retries, a
        # lost message) is restarted, at start and every tick, by whichever worker sees it first.
        interval = settings.TELEPHONY_DIAL_TICK_SECONDS
        while True:
            try:
                close_old_connections()  # a connection broken by a database restart is reopened
                tasks.dialing_watchdog()
            except Exception:  # the database may be down: try again next tick
                logger.exception("dialing watchdog failed")
            if stop.wait(interval):
                break
        # In-flight messages finish or go back to the queue (acked only when done).
        worker.stop(timeout=30_000)
        tasks.broker.close()
