"""/healthz: the status of every configured database, answered before any other middleware.

It runs first so that the container's health check (which calls 127.0.0.1) is not refused
by ALLOWED_HOSTS or redirected to HTTPS. Asked from inside the stack (the health check,
the tasks) it names each database and its state; asked through Nginx, the public front,
which always sets X-Real-IP, it says only ok or error.
"""
from django.db import connections
from django.http import JsonResponse
from django.utils.cache import add_never_cache_headers

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


def _from_outside(request):
    return "HTTP_X_REAL_IP" in request.META


def health_response(request):
    databases = {_label(alias): _probe(alias) for alias in connections}
    healthy = all(state == "ok" for state in databases.values())
    body = {"status": "ok" if healthy else "error"}
    if not _from_outside(request):
        body["databases"] = databases
    response = JsonResponse(body, status=200 if healthy else 503)
    add_never_cache_headers(response)
    return response


class HealthCheckMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path == PATH:
            return health_response(request)
        return self.get_response(request)
