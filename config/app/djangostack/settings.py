"""The settings the stack runs a project with (DJANGO_SETTINGS_MODULE=djangostack.settings).

The project's own settings module (STACK_APP_SETTINGS, `[app] settings` in config/stack.toml)
is imported unchanged, in three steps:

1. the variables projects conventionally read (DATABASE_URL, DJANGO_SECRET_KEY,
   DJANGO_ALLOWED_HOSTS, REDIS_URL, CELERY_BROKER_URL, ... and the names `[app.env]` maps)
   are put in this process's environment, derived from the stack's secret files, so that a
   project reading them finds the stack's values and none is in the container's environment;
2. the project's settings are imported and their upper-case names taken;
3. in the stack (DJANGO_DATABASES set), what the stack decides wins: its databases, secret
   key, allowed hosts and trusted origins, the folders Nginx serves static and media files
   from, the proxy and HTTPS settings (DJANGO_HTTPS=false beats a project that forces the
   HTTPS redirect: TLS is the host's business) and, for a project without a router of its
   own, the stack's router; Celery's settings that keep jobs across a deploy, where the
   project sets none of them (CELERY_DEFAULTS).
"""
import importlib
import os
import sys

from django.core.exceptions import ImproperlyConfigured

from djangostack import env


def project_settings(module_name):
    """The upper-case names of the project's settings module, as Django takes them."""
    if not module_name:
        raise ImproperlyConfigured(
            "STACK_APP_SETTINGS is not set: it names the project's settings module "
            "([app] settings in config/stack.toml)")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only the module itself (or a package of its name) missing is a wrong setting; a
        # package the project's settings import is the project's own error.
        if exc.name is None or not (module_name + ".").startswith(exc.name + "."):
            raise
        raise ImproperlyConfigured(
            f"STACK_APP_SETTINGS={module_name!r} cannot be imported ({exc}): check [app] settings "
            "in config/stack.toml and that the project's folder is the working directory") from None
    return {name: getattr(module, name) for name in dir(module) if name.isupper()}


def stack_settings(project, environ):
    """What the stack decides, over the PROJECT's settings, from the stack's ENVIRON."""
    hosts = env.allowed_hosts(environ)
    if not hosts:
        raise ImproperlyConfigured(
            "DJANGO_ALLOWED_HOSTS is empty: list the host names the site answers to "
            "(config/django.env) or give the host its domains in config/stack.toml")
    key = env.env_secret("DJANGO_SECRET_KEY", environ)
    env.require_real_secret_key(key)
    secure = env.https(environ)
    domains = env.site_domains(environ)
    include_subdomains = env.env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", secure, environ)
    preload = env.env_bool("DJANGO_SECURE_HSTS_PRELOAD", secure, environ)
    routers = project.get("DATABASE_ROUTERS") or []
    if not routers:
        env.database_apps(environ)  # refused here, in one line, rather than at the first query
        routers = ["djangostack.routers.StackRouter"]
    return {
        "DEBUG": env.env_bool("DJANGO_DEBUG", False, environ),
        "SECRET_KEY": key,
        "ALLOWED_HOSTS": hosts,
        "CSRF_TRUSTED_ORIGINS": env.unique(
            [*project.get("CSRF_TRUSTED_ORIGINS", []), *env.env_list("DJANGO_CSRF_TRUSTED_ORIGINS", environ=environ),
             *(f"{scheme}://{name}" for name in domains for scheme in ("https", "http")
               if scheme == "https" or not secure)]),
        "DATABASES": env.postgres_databases(environ),
        "DATABASE_ROUTERS": routers,
        # Nginx serves these two folders from named volumes mounted at the same paths.
        "STATIC_URL": "/static/",
        "STATIC_ROOT": environ.get("DJANGO_STATIC_ROOT", "/srv/static"),
        "MEDIA_URL": "/media/",
        "MEDIA_ROOT": environ.get("DJANGO_MEDIA_ROOT", "/srv/media"),
        # Nginx sets X-Forwarded-Proto; trust it only because Gunicorn is reachable from Nginx alone.
        "SECURE_PROXY_SSL_HEADER": ("HTTP_X_FORWARDED_PROTO", "https"),
        "SECURE_SSL_REDIRECT": env.env_bool("DJANGO_SECURE_SSL_REDIRECT", secure, environ),
        "SESSION_COOKIE_SECURE": env.env_bool("DJANGO_SESSION_COOKIE_SECURE", secure, environ),
        "CSRF_COOKIE_SECURE": env.env_bool("DJANGO_CSRF_COOKIE_SECURE", secure, environ),
        "SECURE_HSTS_SECONDS": env.env_int("DJANGO_SECURE_HSTS_SECONDS", 31536000 if secure else 0, environ),
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": include_subdomains,
        "SECURE_HSTS_PRELOAD": preload,
        # Including subdomains and asking for preloading are decisions about the whole
        # domain, made per host in config/stack.toml (hsts_include_subdomains, hsts_preload);
        # where they are off, `check --deploy` is told so instead of warning on every deploy.
        "SILENCED_SYSTEM_CHECKS": env.unique(
            [*project.get("SILENCED_SYSTEM_CHECKS", []),
             *(check for check, on in (("security.W005", include_subdomains), ("security.W021", preload))
               if domains and not on)]),
    }


# Celery's settings for a project that configures it from Django's (namespace CELERY, the
# Celery docs' way) and sets none of these itself: a job is acknowledged once done, so the
# job of a worker that dies (or is killed past its grace) goes back to the queue, within the
# visibility timeout on Redis; a worker holds one job in reserve, not four. The timeout
# must exceed the longest job (one still running then is delivered again):
# STACK_CELERY_VISIBILITY_TIMEOUT (seconds, config/django.env) changes it. Kombu looks for
# such jobs every 10 s but scans Redis only every 10th time (100 s): every time, here, so a
# killed worker's job runs again within the timeout and 10 s. On Redis (or Valkey), the
# stack's transport (djangostack.broker) takes a job off its queue and records it as in hand
# in one step: kombu's own does it in two, and a worker killed between them loses the job.
# The pool (djangostack.prefork, Celery's prefork) acknowledges at a warm shutdown a job it
# had handed to a child process: Celery's drops it, and the job is handed back and run twice.
VISIBILITY_TIMEOUT = 300
REDIS_TRANSPORT = "djangostack.broker:Transport"
CELERY_DEFAULTS = {
    "CELERY_TASK_ACKS_LATE": True,
    "CELERY_TASK_REJECT_ON_WORKER_LOST": True,
    "CELERY_WORKER_PREFETCH_MULTIPLIER": 1,
    "CELERY_WORKER_POOL": "djangostack.prefork:TaskPool",
    "CELERY_BROKER_TRANSPORT_OPTIONS": {"visibility_timeout": VISIBILITY_TIMEOUT, "unacked_restore_throttle": 1},
}


def redis_transport():
    """The stack's Redis transport; None where kombu is not installed (a Redis the project uses
    as a cache only) or is a release whose internals the transport does not fit (kombu's own
    is kept then, and that is said on stderr)."""
    try:
        from djangostack import broker
    except ImportError:
        return None
    if broker.fits():
        return REDIS_TRANSPORT
    import kombu
    print(f"djangostack: kombu {kombu.__version__} lacks what the stack's Redis transport replaces "
          f"({', '.join(broker.INTERNALS)}): kombu's own is used, and a worker killed while taking "
          "a job may lose it", file=sys.stderr)
    return None


def celery_defaults(project, environ=None, broker=""):
    """The CELERY_DEFAULTS the PROJECT's settings do not set; the stack's transport too when the
    broker (the project's CELERY_BROKER_URL, else BROKER, the environment's) is Redis."""
    timeout = env.env_int("STACK_CELERY_VISIBILITY_TIMEOUT", VISIBILITY_TIMEOUT, environ=environ)
    if timeout < 1:
        raise ImproperlyConfigured(f"STACK_CELERY_VISIBILITY_TIMEOUT={timeout} must be a positive number of seconds")
    transport = {**CELERY_DEFAULTS["CELERY_BROKER_TRANSPORT_OPTIONS"], "visibility_timeout": timeout}
    defaults = {**CELERY_DEFAULTS, "CELERY_BROKER_TRANSPORT_OPTIONS": transport}
    if str(project.get("CELERY_BROKER_URL") or broker).startswith(("redis://", "rediss://")):
        transport = redis_transport()
        if transport:
            defaults["CELERY_BROKER_TRANSPORT"] = transport
    return {name: value for name, value in defaults.items() if name not in project}


# The stack's environment as it was given, before step 1 adds to it (an [app.env] name may
# be one the stack reads itself).
_given = dict(os.environ)
os.environ.update(env.stack_variables(_given))
_project = project_settings(_given.get("STACK_APP_SETTINGS", "").strip())
globals().update(_project)
if env.env_list("DJANGO_DATABASES", environ=_given):
    globals().update(stack_settings(_project, _given))
    globals().update(celery_defaults(_project, _given, os.environ.get("CELERY_BROKER_URL", "")))
