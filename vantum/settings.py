"""The one settings module. Every value comes from the environment (documented in
``.env.example``); the defaults run the product with no set-up: SQLite, the in-memory
channel layer, a local speech engine and, with no OpenAI key, the demo responder.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from bookings.hours import parse_working_hours
from llm.config import llm_config_from_env
from vantum.client_address import FORWARDING_HEADERS, parse_networks
from vantum.env import (
    EnvError,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_str,
    is_weak_secret_key,
    load_env_file,
    read_from_file,
)

BASE_DIR = Path(__file__).resolve().parent.parent

try:
    # A .env file fills in what is not exported (exported variables win); its values go
    # through the same typed reads below.
    load_env_file(BASE_DIR / ".env")
    # Production is the default: development mode must be asked for (`make run` does).
    DEBUG = env_bool("DJANGO_DEBUG", False)
    SECRET_KEY = env_str("DJANGO_SECRET_KEY", "")
    ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ("localhost", "127.0.0.1", "[::1]"))
    CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

    # --- the call endpoint
    VANTUM_ALLOWED_ORIGINS = env_list("VANTUM_ALLOWED_ORIGINS")
    VANTUM_CALL_TOKENS = env_list("VANTUM_CALL_TOKENS")
    VANTUM_MAX_CALLS = env_int("VANTUM_MAX_CALLS", 1000, minimum=1)
    VANTUM_MAX_FRAME_BYTES = env_int("VANTUM_MAX_FRAME_BYTES", 1024 * 1024, minimum=1024)
    VANTUM_MAX_EVENTS_PER_SECOND = env_int("VANTUM_MAX_EVENTS_PER_SECOND", 200, minimum=1)
    VANTUM_AUDIO_FRAME_MS = env_int("VANTUM_AUDIO_FRAME_MS", 100, minimum=10, maximum=100)
    VANTUM_MAX_AUDIO_FRAME_MS = env_int("VANTUM_MAX_AUDIO_FRAME_MS", 500, minimum=10, maximum=1000)
    # daphne closes the socket on a message above its own cap; keep that cap above ours so
    # an oversized frame gets the protocol's error event and the call goes on.
    DAPHNE_WEBSOCKET_MAX_MESSAGE_SIZE = max(4 * VANTUM_MAX_FRAME_BYTES, 4 * 1024 * 1024)
    DAPHNE_WEBSOCKET_MAX_FRAME_SIZE = DAPHNE_WEBSOCKET_MAX_MESSAGE_SIZE

    # --- the model (the spec's variables, names and defaults)
    VANTUM_LLM = llm_config_from_env()

    # --- speech to text
    STT_ENGINE = env_str("STT_ENGINE", "local")
    STT_MODEL = env_str("STT_MODEL", "gpt-4o-mini-transcribe")
    STT_BASE_URL = env_str("STT_BASE_URL", "")
    STT_API_KEY = env_str("STT_API_KEY", "")
    STT_TIMEOUT = env_float("STT_TIMEOUT", 15.0, minimum=0.1)
    STT_MAX_UTTERANCE_SECONDS = env_float("STT_MAX_UTTERANCE_SECONDS", 60.0, minimum=1.0)
    STT_SILENCE_THRESHOLD = env_int("STT_SILENCE_THRESHOLD", 200, minimum=0, maximum=32767)
    STT_FAKE_TEXT = env_str("STT_FAKE_TEXT", "Hello, can you tell me about your pricing?")
    # Hands-free: transcribe a turn speculatively as soon as the caller pauses.
    STT_SPECULATIVE = env_bool("STT_SPECULATIVE", True)
    # Hands-free, local engine: live partial words every this many ms of speech (0: off).
    STT_LIVE_PARTIAL_MS = env_int("STT_LIVE_PARTIAL_MS", 1000, minimum=0, maximum=10000)
    # Listening (issue 9): offline Whisper, Silero VAD, server-side turn detection, Deepgram.
    STT_LOCAL_MODEL = env_str("STT_LOCAL_MODEL", "tiny.en")
    STT_LOCAL_WINDOW_SECONDS = env_float("STT_LOCAL_WINDOW_SECONDS", 10.0, minimum=1.0)
    STT_MAX_CONCURRENT = env_int("STT_MAX_CONCURRENT", 0, minimum=0)
    VANTUM_CACHE_DIR = env_str("VANTUM_CACHE_DIR", "")
    VAD_ENGINE = env_str("VAD_ENGINE", "silero")
    TURN_END_SILENCE_MS = env_int("TURN_END_SILENCE_MS", 400, minimum=100, maximum=5000)
    BARGE_IN_MIN_SPEECH_MS = env_int("BARGE_IN_MIN_SPEECH_MS", 250, minimum=0, maximum=5000)
    TURN_MIN_SPEECH_MS = env_int("TURN_MIN_SPEECH_MS", 96, minimum=32, maximum=2000)
    TURN_SPEECH_THRESHOLD = env_float("TURN_SPEECH_THRESHOLD", 0.5, minimum=0.05, maximum=0.95)
    TURN_PADDING_MS = env_int("TURN_PADDING_MS", 256, minimum=0, maximum=2000)
    TURN_PAUSE_MS = env_int("TURN_PAUSE_MS", 128, minimum=0, maximum=2000)
    TURN_MAX_MS = env_int("TURN_MAX_MS", 28000, minimum=1000, maximum=29000)
    TURN_SMART = env_bool("TURN_SMART", False)
    TURN_SMART_WAIT_MS = env_int("TURN_SMART_WAIT_MS", 1500, minimum=0, maximum=10000)
    DEEPGRAM_API_KEY = env_str("DEEPGRAM_API_KEY", "")
    DEEPGRAM_MODEL = env_str("DEEPGRAM_MODEL", "nova-3")
    DEEPGRAM_URL = env_str("DEEPGRAM_URL", "wss://api.deepgram.com/v1/listen")

    # --- text to speech
    TTS_ENGINE = env_str("TTS_ENGINE", "piper")
    TTS_VOICE = env_str("TTS_VOICE", "")
    TTS_OPENAI_BASE_URL = env_str("TTS_OPENAI_BASE_URL", "")
    TTS_OPENAI_API_KEY = env_str("TTS_OPENAI_API_KEY", "")
    TTS_OPENAI_MODEL = env_str("TTS_OPENAI_MODEL", "gpt-4o-mini-tts")
    TTS_LOOKAHEAD_SECONDS = env_float("TTS_LOOKAHEAD_SECONDS", 2.0, minimum=0.5, maximum=60.0)
    CARTESIA_API_KEY = env_str("CARTESIA_API_KEY", "")
    CARTESIA_MODEL = env_str("CARTESIA_MODEL", "sonic-2")
    CARTESIA_VOICE_ID = env_str("CARTESIA_VOICE_ID", "")
    CARTESIA_URL = env_str("CARTESIA_URL", "wss://api.cartesia.ai/tts/websocket")
    # A client's voice ids (case-insensitive) -> local voices ("|": first one the engine has).
    VOICE_ALIASES = env_str("VOICE_ALIASES", "kyle=en_US-joe-medium|en-us,tessa=en_US-joe-medium|en-us+f3")

    # --- metrics endpoint
    METRICS_TOKEN = env_str("METRICS_TOKEN", "")

    # --- client addresses behind a reverse proxy (vantum/client_address.py)
    # Forwarding headers are believed only from these proxies (IPs or networks).
    VANTUM_TRUSTED_PROXIES = env_list("VANTUM_TRUSTED_PROXIES")
    VANTUM_CLIENT_IP_HEADER = env_str("VANTUM_CLIENT_IP_HEADER", "X-Forwarded-For").strip()
    try:
        parse_networks(VANTUM_TRUSTED_PROXIES)
    except ValueError as problem:
        raise EnvError("VANTUM_TRUSTED_PROXIES", str(problem)) from None
    if VANTUM_CLIENT_IP_HEADER.lower() not in FORWARDING_HEADERS:
        raise EnvError("VANTUM_CLIENT_IP_HEADER", "expected X-Forwarded-For, X-Real-IP or Forwarded")

    # --- admin login throttle (django-axes): per user name and address, never for ever
    ADMIN_LOGIN_FAILURE_LIMIT = env_int("ADMIN_LOGIN_FAILURE_LIMIT", 5, minimum=1)
    ADMIN_LOGIN_COOLOFF_MINUTES = env_float("ADMIN_LOGIN_COOLOFF_MINUTES", 15.0, minimum=0.01)
    # --- recordings, end-of-call webhook (issue 12)
    CALL_RECORDINGS = env_bool("CALL_RECORDINGS", True)
    CALL_RECORDING_RATE = env_int("CALL_RECORDING_RATE", 16000, minimum=8000, maximum=48000)
    CALL_RECORDING_MAX_SECONDS = env_int("CALL_RECORDING_MAX_SECONDS", 3600, minimum=10)
    MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(BASE_DIR / "media")))
    CALL_WEBHOOK_URL = env_str("CALL_WEBHOOK_URL", "")
    CALL_WEBHOOK_SECRET = env_str("CALL_WEBHOOK_SECRET", "")
    CALL_WEBHOOK_TIMEOUT = env_float("CALL_WEBHOOK_TIMEOUT", 5.0, minimum=0.1)
    CALL_WEBHOOK_RETRIES = env_int("CALL_WEBHOOK_RETRIES", 4, minimum=0, maximum=20)
    # The outbox's retries (calls.webhook): first pause (doubling, at most an hour), age limit.
    CALL_WEBHOOK_BACKOFF_SECONDS = env_float("CALL_WEBHOOK_BACKOFF_SECONDS", 30.0, minimum=0.0)
    CALL_WEBHOOK_MAX_AGE_SECONDS = env_float("CALL_WEBHOOK_MAX_AGE_SECONDS", 86400.0, minimum=60.0)
    VANTUM_PUBLIC_URL = env_str("VANTUM_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/")
    if CALL_WEBHOOK_URL and not CALL_WEBHOOK_URL.startswith(("http://", "https://")):
        raise EnvError("CALL_WEBHOOK_URL", "must be an http:// or https:// URL")
    if CALL_WEBHOOK_URL and not CALL_WEBHOOK_SECRET:
        raise EnvError("CALL_WEBHOOK_SECRET", "must be set when CALL_WEBHOOK_URL is set (reports are signed)")
    # --- bookings (the agent's book_meeting / schedule_callback tools)
    BOOKING_TIMEZONE = env_str("BOOKING_TIMEZONE", "UTC")
    BOOKING_WORKING_HOURS = env_str("BOOKING_WORKING_HOURS", "09:00-17:00")
    BOOKING_WORKING_DAYS = env_list("BOOKING_WORKING_DAYS", ("mon", "tue", "wed", "thu", "fri"))
    BOOKING_HOURS = parse_working_hours(
        timezone=BOOKING_TIMEZONE, hours=BOOKING_WORKING_HOURS, days=BOOKING_WORKING_DAYS
    )
    # --- telephony: Twilio Media Streams, outbound dialing (telephony/)
    TWILIO_ACCOUNT_SID = env_str("TWILIO_ACCOUNT_SID", "")
    TWILIO_AUTH_TOKEN = env_str("TWILIO_AUTH_TOKEN", "")
    TWILIO_FROM_NUMBER = env_str("TWILIO_FROM_NUMBER", "")
    TWILIO_PUBLIC_BASE_URL = env_str("TWILIO_PUBLIC_BASE_URL", "").rstrip("/")
    TWILIO_API_BASE_URL = env_str("TWILIO_API_BASE_URL", "").rstrip("/")
    TWILIO_STREAM_TOKEN_MAX_AGE = env_int("TWILIO_STREAM_TOKEN_MAX_AGE", 120, minimum=5)
    TWILIO_STREAM_START_TIMEOUT = env_float("TWILIO_STREAM_START_TIMEOUT", 10.0, minimum=0.1)
    TWILIO_GOODBYE_WAIT_SECONDS = env_float("TWILIO_GOODBYE_WAIT_SECONDS", 15.0, minimum=0.0)
    TELEPHONY_OPENER = env_str(
        "TELEPHONY_OPENER", "Hi {name}, this is Alex from Vantum. Do you have a quick minute?"
    )
    TELEPHONY_DIAL_TICK_SECONDS = env_float("TELEPHONY_DIAL_TICK_SECONDS", 15.0, minimum=0.5)
    TELEPHONY_WORKER_HEARTBEAT_SECONDS = env_float("TELEPHONY_WORKER_HEARTBEAT_SECONDS", 15.0, minimum=2.0)
    TELEPHONY_DIAL_STUCK_SECONDS = env_float("TELEPHONY_DIAL_STUCK_SECONDS", 120.0, minimum=5.0)
    TELEPHONY_IN_CALL_CHECK_SECONDS = env_float("TELEPHONY_IN_CALL_CHECK_SECONDS", 900.0, minimum=30.0)

    DATABASE_URL = env_str("DATABASE_URL", "")
    # Seconds to open a PostgreSQL connection: a database that stops answering (blackholed,
    # not refusing) then fails a write, which is retried and spooled, instead of stalling it.
    VANTUM_DB_CONNECT_TIMEOUT = env_int("VANTUM_DB_CONNECT_TIMEOUT", 5, minimum=2, maximum=300)
    REDIS_URL = env_str("REDIS_URL", "")
    VANTUM_REDIS_MAX_CONNECTIONS = env_int("VANTUM_REDIS_MAX_CONNECTIONS", 64, minimum=2)
    VANTUM_REDIS_POOL_TIMEOUT = env_float("VANTUM_REDIS_POOL_TIMEOUT", 5.0, minimum=0.1)

    # --- outages, shutdowns and crashes (calls/recorder.py, calls/instances.py)
    VANTUM_SPOOL_DIR = Path(env_str("VANTUM_SPOOL_DIR", "") or BASE_DIR / "var" / "spool")
    VANTUM_SPOOL_AFTER_SECONDS = env_float("VANTUM_SPOOL_AFTER_SECONDS", 5.0, minimum=0.0)
    VANTUM_RECORDER_MAX_PENDING = env_int("VANTUM_RECORDER_MAX_PENDING", 200, minimum=1)
    VANTUM_HEARTBEAT_SECONDS = env_float("VANTUM_HEARTBEAT_SECONDS", 5.0, minimum=0.5)
    VANTUM_SHUTDOWN_SECONDS = env_float("VANTUM_SHUTDOWN_SECONDS", 10.0, minimum=1.0)

    # --- per-client limits (calls/limits.py)
    VANTUM_MAX_CALLS_PER_ADDRESS = env_int("VANTUM_MAX_CALLS_PER_ADDRESS", 20, minimum=0)
    VANTUM_MAX_TURNS_PER_MINUTE = env_int("VANTUM_MAX_TURNS_PER_MINUTE", 30, minimum=0)
    VANTUM_MAX_BYTES_PER_SECOND = env_int("VANTUM_MAX_BYTES_PER_SECOND", 1024 * 1024, minimum=1024)
    VANTUM_MAX_AUDIO_BUFFER_BYTES = env_int("VANTUM_MAX_AUDIO_BUFFER_BYTES", 128 * 1024 * 1024, minimum=0)
    LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
    if LOG_LEVEL not in logging.getLevelNamesMapping():
        raise EnvError("LOG_LEVEL", f"unknown level {LOG_LEVEL!r}")

    # --- HTTPS (production behind a TLS proxy: see deploy/ and the README)
    # Secure cookies by default in production: an admin session never travels in clear.
    SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", not DEBUG)
    CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
    # Off by default: the proxy redirects to https; /metrics stays plain for a local scraper.
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", False)
    SECURE_REDIRECT_EXEMPT = [r"^metrics$"]
    # HSTS is remembered by browsers for its whole lifetime: opt in once https works.
    SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 0, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
    SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)
    # The header a TLS-terminating proxy sets, e.g. X-Forwarded-Proto; only when a proxy
    # that overwrites it stands in front (else a client could claim https).
    _proxy_ssl_header = env_str("DJANGO_SECURE_PROXY_SSL_HEADER", "").strip()
    SECURE_PROXY_SSL_HEADER = (
        ("HTTP_" + _proxy_ssl_header.upper().replace("-", "_"), "https") if _proxy_ssl_header else None
    )

    # Checked last so that a bad value elsewhere is reported first.
    if not SECRET_KEY:
        if not DEBUG:
            raise EnvError(
                "DJANGO_SECRET_KEY",
                "must be set in production (DJANGO_DEBUG is false or unset); generate one with "
                "python -c 'import secrets; print(secrets.token_urlsafe(50))'",
            )
        SECRET_KEY = "insecure-development-key-set-DJANGO_SECRET_KEY-in-production"
    elif not DEBUG and is_weak_secret_key(SECRET_KEY):
        raise EnvError(
            "DJANGO_SECRET_KEY",
            "too weak for production: use at least 50 random characters "
            "(python -c 'import secrets; print(secrets.token_urlsafe(50))')",
        )
except EnvError as error:
    where = f" (from {read_from_file[error.name]})" if error.name in read_from_file else ""
    raise ImproperlyConfigured(f"Invalid environment variable {error}{where}") from None

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "agents",
    "calls",
    "axes",
    "bookings",
    "telephony",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as django-axes asks
]

# Admin login throttle (django-axes): after ADMIN_LOGIN_FAILURE_LIMIT failures for one user
# name from one address, that pair is refused (HTTP 429) for ADMIN_LOGIN_COOLOFF_MINUTES.
# The pair, not the name alone, so nobody elsewhere can lock a real admin out; failing
# again during the lockout does not extend it, so no lockout lasts for ever.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = ADMIN_LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=ADMIN_LOGIN_COOLOFF_MINUTES)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_CLIENT_IP_CALLABLE = "vantum.client_address.axes_client_ip"
AXES_COOLOFF_MESSAGE = "Too many failed logins: try again later."

ROOT_URLCONF = "vantum.urls"
ASGI_APPLICATION = "vantum.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=600)}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": BASE_DIR / "db.sqlite3",
            # Async tests write from another thread; an in-memory test DB is per connection.
            "TEST": {"NAME": BASE_DIR / "test_db.sqlite3"},
        }
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # libpq waits forever by default; a connect_timeout in DATABASE_URL wins.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", VANTUM_DB_CONNECT_TIMEOUT)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Calls write from several threads (each call's write queue, tools). A deferred SQLite
    # transaction that reads and then writes (a booking checks the slot, then inserts)
    # fails at once with "database is locked" when another connection is writing;
    # IMMEDIATE takes the write lock up front, so it waits (up to the timeout) instead.
    DATABASES["default"].setdefault("OPTIONS", {}).update({"timeout": 20, "transaction_mode": "IMMEDIATE"})

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            # channels-redis, made to survive Redis outages and bursts (see calls/live.py).
            "BACKEND": "calls.live.ResilientRedisChannelLayer",
            # redis-py 8 applies a socket timeout to blocking reads unless told not to.
            "CONFIG": {
                "hosts": [{"address": REDIS_URL, "socket_timeout": None}],
                "max_connections": VANTUM_REDIS_MAX_CONNECTIONS,
                "pool_timeout": VANTUM_REDIS_POOL_TIMEOUT,
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    # Call tokens never reach the log in clear; a flood of one line is counted, not written
    # (vantum/logging_filters.py).
    "filters": {
        "redact_secrets": {"()": "vantum.logging_filters.RedactSecretsFilter"},
        "collapse_repeats": {"()": "vantum.logging_filters.CollapseRepeatsFilter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["redact_secrets", "collapse_repeats"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # uvicorn logs each WebSocket's path with its query string (the call token) on
        # uvicorn.error and each request on uvicorn.access: both go through our filters.
        "uvicorn.error": {"handlers": ["console"], "propagate": False},
        "uvicorn.access": {"handlers": ["console"], "propagate": False},
        "daphne": {"level": "WARNING"},
        "django.channels.server": {"level": "WARNING"},
        "httpx2": {"level": "WARNING"},  # one line per model request is noise on a call server
        # Django's default config gives "django" its own console handler, and the record then
        # propagates to ours too: every django.* line was printed twice. No handler of its own.
        "django": {"handlers": [], "level": "INFO"},
    },
}

# Call recordings (and any other upload) go through the default storage: a local folder.
# Never served at a public URL: staff play them through an admin view that checks permissions.
MEDIA_URL = "media/"
# Files served at the site's root by WhiteNoise: /favicon.ico (browsers ask for it on every page).
WHITENOISE_ROOT = BASE_DIR / "static" / "root"
