"""The WSGI application Gunicorn serves (djangostack.wsgi:application).

/healthz is answered here, in front of the project's own WSGI application (STACK_APP_WSGI,
`[app] wsgi` in config/stack.toml), which gets every other request: so every project is
health-checked, and the container's health check (which calls 127.0.0.1) is never refused by
ALLOWED_HOSTS nor redirected to HTTPS or to a trailing slash. Asked from inside the stack
(the health check, the tasks) it names each database and its state; asked through Nginx, the
public front, which always sets X-Real-IP, it says only ok or error.
"""
import importlib
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djangostack.settings")

import django  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.db import close_old_connections, connections  # noqa: E402
from django.http import JsonResponse  # noqa: E402
from django.utils.cache import add_never_cache_headers  # noqa: E402

PATH = "/healthz"


def _probe(alias):
    try:
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any failure means "not ok"; the class name says which
        return f"error: {type(exc).__name__}"
    return "ok"


def _label(alias):
    # The stack's first database is Django's `default` alias; report it by its name.
    connection = connections[alias]
    if alias == "default" and connection.vendor == "postgresql":
        return connection.settings_dict["NAME"]
    return alias


def _from_outside(environ):
    return "HTTP_X_REAL_IP" in environ


def health_response(environ):
    # Django's request cycle is not run here: its start and end would close a connection
    # past CONN_MAX_AGE or broken, so the probe does the same on both sides.
    close_old_connections()
    try:
        databases = {_label(alias): _probe(alias) for alias in connections}
    finally:
        close_old_connections()
    healthy = all(state == "ok" for state in databases.values())
    body = {"status": "ok" if healthy else "error"}
    if not _from_outside(environ):
        body["databases"] = databases
    response = JsonResponse(body, status=200 if healthy else 503)
    add_never_cache_headers(response)
    return response


def project_application(target):
    """The project's WSGI callable TARGET ("module:attribute"), loaded under the stack's settings."""
    if not target:
        raise ImproperlyConfigured(
            "STACK_APP_WSGI is not set: it names the project's WSGI application, module:attribute "
            "([app] wsgi in config/stack.toml)")
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ImproperlyConfigured(
            f"STACK_APP_WSGI={target!r} is not module:attribute (like mysite.wsgi:application; "
            "[app] wsgi in config/stack.toml)")
    settings_module = os.environ["DJANGO_SETTINGS_MODULE"]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not (module_name + ".").startswith(exc.name + "."):
            raise
        raise ImproperlyConfigured(
            f"STACK_APP_WSGI={target!r} cannot be imported ({exc}): check [app] wsgi in "
            "config/stack.toml") from None
    finally:
        # A project's wsgi.py that sets DJANGO_SETTINGS_MODULE outright changes nothing here
        # (the settings are loaded already), but would point the processes it starts elsewhere.
        os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ImproperlyConfigured(f"STACK_APP_WSGI={target!r}: {module_name} has no {attribute!r}") from None


# The stack's settings first, so that the project's WSGI module finds them configured.
django.setup(set_prefix=False)
project = project_application(os.environ.get("STACK_APP_WSGI", "").strip())


def application(environ, start_response):
    if environ.get("PATH_INFO") != PATH:
        return project(environ, start_response)
    response = health_response(environ)
    start_response(f"{response.status_code} {response.reason_phrase}", list(response.items()))
    return [response.content]
