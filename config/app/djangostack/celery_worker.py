"""`python -m djangostack.celery_worker CELERY-ARGUMENTS...`: Celery's own command line, with a
heartbeat file for its health test (health = "celery"; djangostack.run execs it, with the
stack's variables, when STACK_CELERY_HEARTBEAT names the file).

The file is touched when the worker is ready and at each event heartbeat it sends (every
2 s, from its main loop, while it is connected to its broker); the health test is the
file's age. Asking the worker itself (`celery inspect ping`) started a Python with Celery
and the project's app at every check: about half a CPU-second every few seconds for each
worker, on a small server too.

A fresh interpreter, as the `celery` program is: an eventlet or gevent pool is patched in
before anything else is imported. A restart by SIGHUP runs this file again (Celery re-execs
sys.argv), heartbeats included.
"""
import os
import sys

from celery import maybe_patch_concurrency

ARGUMENTS = sys.argv[1:]
maybe_patch_concurrency(["celery", *ARGUMENTS])

from celery import signals  # noqa: E402  (after the patching, as Celery's own program does)
from celery.bin.celery import celery  # noqa: E402

HEARTBEAT = os.environ["STACK_CELERY_HEARTBEAT"]


def touch(**_):
    with open(HEARTBEAT, "a"):
        os.utime(HEARTBEAT)


# Celery keeps weak references to receivers unless told.
signals.worker_ready.connect(touch, weak=False)
signals.heartbeat_sent.connect(touch, weak=False)

if __name__ == "__main__":
    sys.exit(celery(args=ARGUMENTS, prog_name="celery", auto_envvar_prefix="CELERY"))
