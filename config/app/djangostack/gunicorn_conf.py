"""Gunicorn settings; every value can be changed from the environment."""
import multiprocessing
import os
import signal
import sys


# A stop while the master is still loading the project (before it installs its own handlers,
# which replace these) ends it at once. Without them the stop was lost: Gunicorn is PID 1 of
# its container, where the kernel drops a signal that has no handler, so the engine waited the
# whole stop_grace_period (40 s) before killing a container stopped right after it started (a
# backup stopping the app, a rollback). Nothing is served yet, nor any worker forked. A reload
# (SIGHUP) reads this file again in a running master: its own handlers stay.
def _stop_while_loading(signum, frame):
    os._exit(0)


for _stop in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
    if signal.getsignal(_stop) in (signal.SIG_DFL, signal.default_int_handler):  # Python's, not Gunicorn's
        signal.signal(_stop, _stop_while_loading)

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
# Gunicorn's own rule of thumb, capped so a big host does not open hundreds of DB connections.
workers = int(os.environ.get("GUNICORN_WORKERS", min(2 * multiprocessing.cpu_count() + 1, 9)))
threads = int(os.environ.get("GUNICORN_THREADS", 1))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "sync")


# Read here, not with djangostack.env: Gunicorn loads this file by its path, also for a bare
# WSGI application whose PYTHONPATH lacks the stack's package (the bench's ceiling).
def _switch(name, default):
    value = os.environ.get(name, default)
    if value not in ("0", "1"):
        raise ValueError(f"{name}={value!r}: 1 (on) or 0 (off)")
    return value == "1"


# The master loads the project once and forks the workers from it: a container starts its
# five workers for the CPU of one Django import, not five (0.7 CPU-s each under load), and
# they share the pages of the code until they write them. GUNICORN_PRELOAD=0 loads it in
# each worker (a project that starts threads or opens sockets at import and cannot be forked);
# it is the default for gevent and eventlet, whose workers patch the standard library before
# the project may be imported.
preload_app = _switch("GUNICORN_PRELOAD", "1" if worker_class in ("sync", "gthread") else "0")


def pre_fork(server, worker):
    # A database connection the project opened while loading (a query in AppConfig.ready) is
    # closed before a worker is forked: workers sharing one socket would garble its protocol.
    # Asked of the running server (GUNICORN_CMD_ARGS=--preload sets it too), and only of a
    # Django that was set up: the same configuration serves a bare WSGI application (the
    # bench's ceiling), where there is no connection, nor settings to find them by.
    db = sys.modules.get("django.db")
    if server.cfg.preload_app and db is not None and sys.modules["django.conf"].settings.configured:
        db.connections.close_all()


timeout = int(os.environ.get("GUNICORN_TIMEOUT", 30))
# On SIGTERM (a deploy stopping the old container) the workers finish the requests in flight
# for up to this long; the compose file gives the container 40 s before it is killed.
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", 30))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", 5))
# The heartbeat file on tmpfs, not on the container's overlay filesystem.
worker_tmp_dir = "/dev/shm"
# Nginx logs every request already; a second line per request from Gunicorn cost ~25% of
# the page's throughput (inv bench). GUNICORN_ACCESS_LOG=- turns it on.
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
# Only Nginx reaches Gunicorn (it is on the app's network alone), so trust its headers.
forwarded_allow_ips = "*"
