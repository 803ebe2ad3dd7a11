"""Lepton Console settings: one module, every value from the environment.

With no environment at all the console runs on one machine (the embedded default): SQLite and
files under ``var/``, Celery's filesystem broker, a secret key generated once into ``var/``,
DEBUG off and the hosts of ``LEPTON_BIND`` allowed. Larger installations set ``DATABASE_URL``
(PostgreSQL), ``CELERY_BROKER_URL`` (Redis), ``ALLOWED_HOSTS`` and ``LEPTON_HTTPS``; developers
set ``DEBUG=true``. ``.env.example`` documents every variable.
"""

import os
import re
import secrets
import socket
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from dotenv import load_dotenv

BASE_DIR = Path(__file__).resolve().parent.parent
# Real environment variables win over .env (override=False).
load_dotenv(BASE_DIR / ".env", override=False)


def env_bool(name: str, *, default: bool) -> bool:
    value = (os.environ.get(name) or str(default)).strip().lower()
    if value not in ("true", "false"):
        raise ImproperlyConfigured(f"{name} must be 'true' or 'false', not {value!r}.")
    return value == "true"


def env_int(name: str, *, default: int) -> int:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {value!r}.") from None


def env_list(name: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


# pytest (which sets PYTEST_VERSION) gets its own var/ so tests never touch a running console's
# database file or broker folder.
_default_var = BASE_DIR / "var" / ("test" if os.environ.get("PYTEST_VERSION") else "")
VAR_DIR = Path(os.environ.get("LEPTON_VAR_DIR") or _default_var).resolve()
VAR_DIR.mkdir(parents=True, exist_ok=True)

# The console started by scripts/run.sh is a real service people share, so DEBUG is off unless
# a developer asks for it (DEBUG=true): a 500 must never show Django's debug page.
DEBUG = env_bool("DEBUG", default=False)
# True when the console is reached over HTTPS (directly or behind a TLS proxy): only then are
# cookies marked Secure, plain HTTP redirected and HSTS sent; run.sh serves plain HTTP.
LEPTON_HTTPS = env_bool("LEPTON_HTTPS", default=False)
# Address the web server binds to (scripts/run.sh, Procfile); it also names the allowed host.
LEPTON_BIND = os.environ.get("LEPTON_BIND") or "127.0.0.1:8000"


def generated_secret_key() -> str:
    """A key generated once into var/ (mode 600), so sessions survive restarts."""
    path = VAR_DIR / "secret_key"
    if not path.exists():
        # Created with mode 600 from the start: never readable by others, not even briefly.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


def bind_hosts(bind: str) -> list[str]:
    """Host names a server bound to ``bind`` (host:port) answers to, plus localhost."""
    host = bind.rsplit(":", 1)[0].strip("[]") if ":" in bind else bind
    hosts = ["localhost", "127.0.0.1", "[::1]"]
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - reading the bind address, not binding
        # Every interface: the names this machine goes by. Others go in ALLOWED_HOSTS.
        hosts += [socket.gethostname(), socket.getfqdn()]
    elif ":" in host:
        hosts.append(f"[{host}]")
    else:
        hosts.append(host)
    return list(dict.fromkeys(h for h in hosts if h))


SECRET_KEY = os.environ.get("SECRET_KEY") or generated_secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS") or bind_hosts(LEPTON_BIND)
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django.contrib.postgres",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "csp",
    "axes",
    "lepton_web.apps.LeptonWebConfig",
    "datasets_app",
    "training_app",
    "models_app",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Refuses an oversized dataset upload before anything reads its body (issue 9 item 23).
    "datasets_app.uploads.DatasetUploadLimitMiddleware",
    # Every other address: a body over what it accepts is a 413 before anything reads it.
    "lepton_web.middleware.RequestBodyLimitMiddleware",
    # Before anything reads input: a NUL anywhere is a 400 naming the field (issue 9 item 7).
    "lepton_web.middleware.RejectNulCharactersMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "lepton_web.middleware.ConsoleLoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # A page's 405 says why in a sentence (Django's is an empty body).
    "lepton_web.middleware.MethodNotAllowedPageMiddleware",
    # Last, as django-axes asks: turns a refused login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "lepton_web.urls"
WSGI_APPLICATION = "lepton_web.wsgi.application"
ASGI_APPLICATION = "lepton_web.asgi.application"

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
                "lepton_web.access.roles_context",
                "lepton_web.navigation.nav_context",
            ],
        },
    }
]

# --- Database -------------------------------------------------------------------------------
DATABASE_URL = os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'lepton.sqlite3'}"
DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL, conn_max_age=env_int("DATABASE_CONN_MAX_AGE", default=60)
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web and worker processes share the file: WAL lets readers run beside the one writer,
    # IMMEDIATE takes the write lock at BEGIN (no deadlock-prone lock upgrades), and the
    # timeout waits for it instead of failing with "database is locked".
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not memory, so worker processes started by integration tests share it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Accounts ---------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Password guessing: after LOGIN_FAILURE_LIMIT wrong passwords for one username from one
# address, that pair is refused for LOGIN_LOCKOUT_MINUTES (django-axes; the counter resets on
# a successful login). Per pair, so nobody can lock a colleague out from elsewhere. An admin
# lifts a lockout early with `python manage.py axes_reset_username NAME`.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_LOCKOUT_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "lepton_web.views.login_locked_out"
# Behind reverse proxies that append to X-Forwarded-For, set their number so that the client's
# address (not the proxy's) is what counts; 0: the connection's address.
LOGIN_TRUSTED_PROXIES = env_int("LOGIN_TRUSTED_PROXIES", default=0)
AXES_CLIENT_IP_CALLABLE = "lepton_web.views.login_client_address"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE_SECONDS", default=12 * 3600)

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# --- Files --------------------------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
# Front-end libraries come from npm (package-lock.json pins them); served from our own origin.
NODE_MODULES_DIR = BASE_DIR / "node_modules"
if (NODE_MODULES_DIR / "chart.js" / "dist").is_dir():
    STATICFILES_DIRS.append(("vendor/chartjs", NODE_MODULES_DIR / "chart.js" / "dist"))
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT") or VAR_DIR / "media")
MEDIA_URL = "media/"

STORAGE_BACKEND = os.environ.get("STORAGE_BACKEND", "local")
if STORAGE_BACKEND == "local":
    _default_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": MEDIA_ROOT},
    }
elif STORAGE_BACKEND == "s3":
    # Any S3-compatible store (AWS, MinIO, Ceph); credentials come from AWS_* variables.
    _default_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": os.environ.get("STORAGE_S3_BUCKET", ""),
            "endpoint_url": os.environ.get("STORAGE_S3_ENDPOINT_URL") or None,
            "region_name": os.environ.get("STORAGE_S3_REGION") or None,
            "default_acl": None,
            "file_overwrite": False,
        },
    }
else:
    raise ImproperlyConfigured(f"STORAGE_BACKEND must be 'local' or 's3', not {STORAGE_BACKEND!r}.")
STORAGES = {
    "default": _default_storage,
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024

# --- Security -------------------------------------------------------------------------------------
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
# Content-Security-Policy on every response (django-csp): scripts only from this site's own files
# (no inline script or handler, no eval; pages keep their behaviour in static/js), nothing
# loaded from elsewhere, no plugins, no framing, forms post only here. Inline style attributes
# stay allowed (progress bars, chart sizes): they cannot run code. The browser tests fail on any
# violation the console reports.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:", "blob:"],
        "font-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}
if LEPTON_HTTPS:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", default=True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", default=True)
    if env_bool("BEHIND_TLS_PROXY", default=False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- REST API -----------------------------------------------------------------------------------
REST_FRAMEWORK = {
    # Token first: DRF answers a request without credentials with the first class's
    # challenge, so callers get 401 + "WWW-Authenticate: Token" rather than a bare 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "lepton_web.authentication.HashedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "lepton_web.api.schema.ConsoleAutoSchema",
    "EXCEPTION_HANDLER": "lepton_web.api.errors.exception_handler",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    # ?format= is ours (export csv|jsonl), not DRF's renderer override.
    "URL_FORMAT_OVERRIDE": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Lepton Console API",
    "DESCRIPTION": "Datasets, fine-tuning runs, model registry and deployments.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "JobStatusEnum": "lepton_web.jobs.JobStatus",
        "DatasetStatusEnum": "datasets_app.models.Dataset.Status",
        "ModelVersionStatusEnum": "models_app.models.ModelVersion.Status",
        "DeploymentRuntimeEnum": "models_app.models.Deployment.Runtime",
        "SearchStatusEnum": "training_app.models.HyperparameterSearch.Status",
    },
}

# --- Celery -------------------------------------------------------------------------------------
BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or "filesystem://"
if CELERY_BROKER_URL.startswith("filesystem://"):
    for sub in ("queue", "control", "processed"):
        (BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    # In and out folders are the same directory so web and worker share one queue; polling every
    # 0.1 s (the default 1 s adds a second to every task); processed messages are not kept.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "control_folder": str(BROKER_DIR / "control"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "store_processed": False,
        "polling_interval": 0.1,
    }
else:
    # Long jobs never rely on redelivery (see lepton_web/celery.py), so the visibility timeout
    # only has to outlast the longest task; a short one would start a second copy of a run.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT_SECONDS", default=13 * 3600),
        "socket_connect_timeout": 3,
        "socket_timeout": 5,
    }
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# A running job's heartbeat thread writes every few seconds (even while the job's own thread is
# busy on the CPU); a job silent for JOB_STALE_AFTER_SECONDS has lost its worker. Every worker
# sweeps every JOB_SWEEP_INTERVAL_SECONDS, so a lost worker is noticed within about 25 s.
JOB_HEARTBEAT_INTERVAL_SECONDS = env_int("JOB_HEARTBEAT_INTERVAL_SECONDS", default=3)
JOB_STALE_AFTER_SECONDS = env_int("JOB_STALE_AFTER_SECONDS", default=20)
JOB_SWEEP_INTERVAL_SECONDS = env_int("JOB_SWEEP_INTERVAL_SECONDS", default=5)
# A job still queued after this long has its message published again (it may have been lost);
# the copy expires after the same time, so a job waiting for a busy worker gathers no pile.
JOB_REPUBLISH_AFTER_SECONDS = env_int("JOB_REPUBLISH_AFTER_SECONDS", default=60)
# Queue (and exchange) names start with this, so consoles sharing one Redis server never take
# each other's tasks: LEPTON_INSTANCE=lab gives queues "lab.default" and "lab.gpu".
LEPTON_INSTANCE = os.environ.get("LEPTON_INSTANCE", "").strip()
if LEPTON_INSTANCE and not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", LEPTON_INSTANCE):
    raise ImproperlyConfigured(
        "LEPTON_INSTANCE names this console's queues: use up to 40 letters, digits, '-' or '_', "
        f"not {LEPTON_INSTANCE!r}."
    )
CELERY_QUEUE_PREFIX = f"{LEPTON_INSTANCE}." if LEPTON_INSTANCE else ""
# Checkpoints of failed and cancelled runs are kept this long for "Resume", then removed.
TRAINING_CHECKPOINT_RETENTION_HOURS = env_int("TRAINING_CHECKPOINT_RETENTION_HOURS", default=168)
WORKER_ONLINE_WINDOW_SECONDS = env_int("WORKER_ONLINE_WINDOW_SECONDS", default=45)

# --- Logging ------------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # django-axes's start-up banner on every command (its attempts and lockouts still log).
        "axes.apps": {"level": "WARNING"},
    },
}
CSRF_FAILURE_VIEW = "lepton_web.views.csrf_failure"

# --- Dataset import limits (shown on the upload page) ----------------------------------------
DATASET_MAX_FILE_BYTES = env_int("DATASET_MAX_FILE_MB", default=2048) * 1024 * 1024
# A .gz upload may inflate to this much; past it the import stops with a plain message.
DATASET_MAX_UNCOMPRESSED_BYTES = env_int("DATASET_MAX_UNCOMPRESSED_MB", default=8192) * 1024 * 1024
DATASET_MAX_COLUMNS = env_int("DATASET_MAX_COLUMNS", default=200)
# Longer texts are cut at this many characters and flagged "truncated"; nothing else is lost.
DATASET_MAX_TEXT_CHARS = env_int("DATASET_MAX_TEXT_CHARS", default=20000)
# Parallel COPY streams per import on PostgreSQL (each is a database server process).
DATASET_IMPORT_WRITERS = env_int("DATASET_IMPORT_WRITERS", default=2)
# How long the labeling queue holds a record shown to one annotator before anyone else may
# be given it (they are labeling it, or walked away from it).
LABELING_CLAIM_SECONDS = env_int("LABELING_CLAIM_SECONDS", default=600)
# On PostgreSQL the labeling queue's two calls are prepared once per database connection
# (parsing and planning them was a sixth of the database time of a label). Set it off behind
# a pooler that hands one client several server connections (PgBouncer in transaction mode).
LABELING_PREPARED_STATEMENTS = env_bool("LABELING_PREPARED_STATEMENTS", default=True)
# Uploads larger than this stream to a temporary file instead of memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024

# --- Training -------------------------------------------------------------------------------
# Local scratch space of a gpu worker: tokenised caches, checkpoints, artifacts before upload.
# Put it on storage every gpu worker shares if runs should resume on another machine.
TRAINING_WORK_DIR = Path(os.environ.get("TRAINING_WORK_DIR") or VAR_DIR / "training")
# Copy checkpoints to the storage so that another machine can resume a run (auto: when the
# storage is not the local disk). See training_app/checkpoints.py.
TRAINING_CHECKPOINT_SYNC = os.environ.get("TRAINING_CHECKPOINT_SYNC", "auto").lower()
if TRAINING_CHECKPOINT_SYNC not in ("auto", "on", "off"):
    raise ImproperlyConfigured(
        f"TRAINING_CHECKPOINT_SYNC must be auto, on or off, not {TRAINING_CHECKPOINT_SYNC!r}."
    )
# Folders on the server that may be registered as base models (comma-separated); uploads of
# zipped model folders are unpacked under MEDIA_ROOT and limited to this many bytes.
BASE_MODEL_ROOTS = env_list("BASE_MODEL_ROOTS") or [str(VAR_DIR / "models")]
BASE_MODEL_MAX_UNPACKED_BYTES = env_int("BASE_MODEL_MAX_UNPACKED_MB", default=4096) * 1024 * 1024

# --- Serving (models_app/runtime) ------------------------------------------------------------
# Limits of one predict call; larger requests get a 400 naming the field.
SERVE_MAX_TEXTS = env_int("SERVE_MAX_TEXTS", default=256)
SERVE_MAX_CHARS = env_int("SERVE_MAX_CHARS", default=10_000)
# Keep every predict call's texts and results (for later labeling). Off by default.
SERVE_LOG_PREDICTIONS = env_bool("SERVE_LOG_PREDICTIONS", default=False)
# Explanations (a second or more of CPU a text) computed at once per process; a request that
# finds them all taken waits up to EXPLAIN_WAIT_SECONDS, then gets a 429 to try again (so a
# burst of explain calls cannot take every core from predictions and pages).
EXPLAIN_CONCURRENCY = env_int("EXPLAIN_CONCURRENCY", default=2)
EXPLAIN_WAIT_SECONDS = env_int("EXPLAIN_WAIT_SECONDS", default=3)
# Threads per loaded model (0: cores / SERVE_PROCESSES), models kept per process, batching window.
SERVE_THREADS = env_int("SERVE_THREADS", default=0)
SERVE_PROCESSES = env_int("SERVE_PROCESSES", default=2)
SERVE_MAX_MODELS = env_int("SERVE_MAX_MODELS", default=4)
SERVE_BATCH_WINDOW_MS = env_int("SERVE_BATCH_WINDOW_MS", default=2)
# An export below this label agreement with PyTorch is never chosen by default.
SERVE_PARITY_MIN_AGREEMENT = 0.99
# Local copies of versions served from remote storage (S3).
SERVE_CACHE_DIR = Path(os.environ.get("SERVE_CACHE_DIR") or VAR_DIR / "serve-cache")
# Their bound (least recently used copies go first; copies a process holds stay) and how often a
# serving process sweeps them (copies of deleted versions and exports go at the next sweep).
SERVE_CACHE_MAX_MB = env_int("SERVE_CACHE_MAX_MB", default=20_480)
SERVE_CACHE_SWEEP_SECONDS = env_int("SERVE_CACHE_SWEEP_SECONDS", default=300)
