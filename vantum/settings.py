"""The one settings module. Every value comes from the environment (documented in
``.env.example``); the defaults run the product with no set-up: SQLite, the in-memory
channel layer, a local speech engine and, with no OpenAI key, the demo responder.
"""

from __future__ import annotations

import logging
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from llm.config import llm_config_from_env
from vantum.env import EnvError, env_bool, env_float, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent

try:
    DEBUG = env_bool("DJANGO_DEBUG", True)
    SECRET_KEY = env_str("DJANGO_SECRET_KEY", "")
    if not SECRET_KEY:
        if not DEBUG:
            raise EnvError("DJANGO_SECRET_KEY", "must be set when DJANGO_DEBUG is false")
        SECRET_KEY = "insecure-development-key-set-DJANGO_SECRET_KEY-in-production"
    ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ("localhost", "127.0.0.1", "[::1]"))
    CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

    # --- the call endpoint
    VANTUM_ALLOWED_ORIGINS = env_list("VANTUM_ALLOWED_ORIGINS")
    VANTUM_CALL_TOKENS = env_list("VANTUM_CALL_TOKENS")
    VANTUM_MAX_CALLS = env_int("VANTUM_MAX_CALLS", 1000, minimum=1)
    VANTUM_MAX_FRAME_BYTES = env_int("VANTUM_MAX_FRAME_BYTES", 1024 * 1024, minimum=1024)
    VANTUM_MAX_EVENTS_PER_SECOND = env_int("VANTUM_MAX_EVENTS_PER_SECOND", 200, minimum=1)
    VANTUM_AUDIO_FRAME_MS = env_int("VANTUM_AUDIO_FRAME_MS", 100, minimum=10, maximum=100)
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
    CARTESIA_API_KEY = env_str("CARTESIA_API_KEY", "")
    CARTESIA_MODEL = env_str("CARTESIA_MODEL", "sonic-2")
    CARTESIA_VOICE_ID = env_str("CARTESIA_VOICE_ID", "")
    CARTESIA_URL = env_str("CARTESIA_URL", "wss://api.cartesia.ai/tts/websocket")
    # A client's voice ids (case-insensitive) -> local voices ("|": first one the engine has).
    VOICE_ALIASES = env_str("VOICE_ALIASES", "kyle=en_US-joe-medium|en-us,tessa=en_US-joe-medium|en-us+f3")

    # --- metrics endpoint
    METRICS_TOKEN = env_str("METRICS_TOKEN", "")

    DATABASE_URL = env_str("DATABASE_URL", "")
    REDIS_URL = env_str("REDIS_URL", "")
    LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
    if LOG_LEVEL not in logging.getLevelNamesMapping():
        raise EnvError("LOG_LEVEL", f"unknown level {LOG_LEVEL!r}")
except EnvError as error:
    raise ImproperlyConfigured(f"Invalid environment variable {error}") from None

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
]

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
            "OPTIONS": {"timeout": 20},
        }
    }

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # redis-py 8 applies a socket timeout to blocking reads unless told not to.
            "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": None}]},
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
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "daphne": {"level": "WARNING"},
        "django.channels.server": {"level": "WARNING"},
        "httpx2": {"level": "WARNING"},  # one line per model request is noise on a call server
    },
}
