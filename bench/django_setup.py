"""Set up Django for an in-process benchmark: production-like, on a throwaway database."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def setup_django() -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vantum.settings")
    os.environ["LOG_LEVEL"] = "WARNING"
    # Production (DEBUG off) needs a strong key; this one is for benchmarks only.
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-secret-key-x7Qp2Lm9Zr4Tv8Nw1Ks6Hd3Jf5Gb0Yc")
    os.environ["DATABASE_URL"] = f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite3"
    import django

    django.setup()
