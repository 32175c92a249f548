"""Settings shared by every environment. Nothing here is a secret or a host name."""
import os
import tempfile
from pathlib import Path

from .env import env_bool, env_int, env_list, env_secret, env_str, postgres_databases

BASE_DIR = Path(__file__).resolve().parent.parent.parent

SECRET_KEY = env_secret("DJANGO_SECRET_KEY")
DEBUG = env_bool("DJANGO_DEBUG", False)
# Views that only the tests use (a request that takes seconds, to prove a deploy lets the
# requests in flight finish). Never on in a real deployment.
TEST_VIEWS = env_bool("DJANGO_TEST_VIEWS", False)
# The site's public names, from a host's `domains` in config/stack.toml (the deploy passes
# them): they are allowed hosts and trusted origins on top of what the env file lists.
SITE_DOMAINS = env_list("DJANGO_SITE_DOMAINS")
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"]) + SITE_DOMAINS
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS") + [
    f"{scheme}://{name}" for name in SITE_DOMAINS for scheme in ("https", "http")
    if scheme == "https" or not env_bool("DJANGO_HTTPS", False)]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "hello",
    "notes",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "hello.urls"
WSGI_APPLICATION = "hello.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

# The stack passes its databases in (see env.postgres_databases); with none configured
# the project runs on SQLite so that `manage.py runserver` works without Docker.
DATABASES = postgres_databases() or {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": env_str("DJANGO_SQLITE_PATH", str(BASE_DIR / "db.sqlite3")),
    }
}
DATABASE_ROUTERS = ["hello.routers.AppDatabaseRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

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

# Nginx serves these two folders from named volumes (config/nginx); the paths here are
# where the app container mounts the same volumes.
STATIC_URL = "/static/"
STATIC_ROOT = env_str("DJANGO_STATIC_ROOT", str(BASE_DIR / "staticfiles"))
MEDIA_URL = "/media/"
MEDIA_ROOT = env_str("DJANGO_MEDIA_ROOT", str(BASE_DIR / "media"))

# Celery (hello/celery.py reads the CELERY_* settings). The stack exports the broker's URL when
# it has a [[services]] broker; without one the notes' word count runs in the request and
# nothing connects anywhere.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "")
HELLO_TICK_SECONDS = env_int("HELLO_TICK_SECONDS", 60)
if HELLO_TICK_SECONDS < 1:
    raise ValueError(f"HELLO_TICK_SECONDS={HELLO_TICK_SECONDS} is not valid: a number of seconds, 1 or more")
CELERY_BEAT_SCHEDULE = {"tick": {"task": "notes.tasks.tick", "schedule": HELLO_TICK_SECONDS}}
# Beat's record of the last runs: the code's folder is not the app user's to write.
CELERY_BEAT_SCHEDULE_FILENAME = env_str("HELLO_BEAT_SCHEDULE_FILE",
                                        os.path.join(tempfile.gettempdir(), "celerybeat-schedule"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("DJANGO_LOG_LEVEL", "INFO")},
}
