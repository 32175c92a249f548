"""`python -m djangostack.run COMMAND [ARGUMENT...]`: what each process of the stack
([[processes]] in config/stack.toml) runs in front of its command.

A Celery worker or a long-running management command reads the same conventional variables
as the app (DATABASE_URL, the services' URLs, the secret key, ...), which hold secrets: they
are derived here, from the secret files, into this process's environment alone (never the
container's, which `docker inspect` shows), and the command replaces this process, so that
it gets the stop signal itself.

A Celery worker whose health is "celery" (STACK_CELERY_HEARTBEAT names a file) runs in this
process instead, Celery's own command line unchanged: the file is touched when the worker is
ready and at each of its event heartbeats (every 2 s, from its main loop, while it is
connected to its broker), and its health test is that file's age. Asking the worker itself
(`celery inspect ping`) started a Python with Celery and the project's app at every check:
about half a CPU-second every few seconds for each worker, on a small server too.
"""
import os
import sys

from django.core.exceptions import ImproperlyConfigured

from djangostack import env

USAGE = "usage: python -m djangostack.run COMMAND [ARGUMENT...]"


def stack_variables(environ):
    """Every variable the stack derives for the app from ENVIRON."""
    derive = getattr(env, "stack_variables", None) or env.conventional_variables
    return derive(environ)


def environment(environ):
    """ENVIRON with the stack's variables added; a variable already set keeps its value."""
    return {**stack_variables(environ), **environ}


def celery_argv(argv):
    """Celery's own arguments when ARGV runs its command line (`celery ...` or `python -m
    celery ...`), else None."""
    if os.path.basename(argv[0]) == "celery":
        return argv[1:]
    if os.path.basename(argv[0]).startswith("python") and argv[1:3] == ["-m", "celery"]:
        return argv[3:]
    return None


def run_celery(arguments, heartbeat):
    """Celery's command line with ARGUMENTS in this process, the file HEARTBEAT touched when its
    worker is ready and at each heartbeat it sends."""
    from celery import signals

    def touch(**_):
        with open(heartbeat, "a"):
            os.utime(heartbeat)

    # Celery keeps weak references to receivers unless told.
    signals.worker_ready.connect(touch, weak=False)
    signals.heartbeat_sent.connect(touch, weak=False)
    sys.argv = ["celery", *arguments]
    from celery.__main__ import main as celery_main
    celery_main()


def main(argv):
    if not argv:
        print(USAGE, file=sys.stderr)
        return 2
    try:
        prepared = environment(dict(os.environ))
    except ImproperlyConfigured as exc:
        print(f"djangostack.run: {exc}", file=sys.stderr)
        return 1
    heartbeat = os.environ.get("STACK_CELERY_HEARTBEAT")
    arguments = celery_argv(argv) if heartbeat else None
    if arguments is not None:
        # The variables for this process alone, as exec would have given them.
        os.environ.update(prepared)
        return run_celery(arguments, heartbeat)
    try:
        os.execvpe(argv[0], argv, prepared)
    except OSError as exc:
        print(f"djangostack.run: cannot run {argv[0]!r}: {exc.strerror}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
