"""`python -m djangostack.run COMMAND [ARGUMENT...]`: what each process of the stack
([[processes]] in config/stack.toml) runs in front of its command.

A Celery worker or a long-running management command reads the same conventional variables
as the app (DATABASE_URL, the services' URLs, the secret key, ...), which hold secrets: they
are derived here, from the secret files, into this process's environment alone (never the
container's, which `docker inspect` shows), and the command replaces this process, so that
it gets the stop signal itself.

A Celery worker whose health is "celery" (STACK_CELERY_HEARTBEAT names a file) runs through
djangostack.celery_worker instead, which touches that file at its heartbeats.
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


def main(argv):
    if not argv:
        print(USAGE, file=sys.stderr)
        return 2
    try:
        prepared = environment(dict(os.environ))
    except ImproperlyConfigured as exc:
        print(f"djangostack.run: {exc}", file=sys.stderr)
        return 1
    if os.environ.get("STACK_CELERY_HEARTBEAT"):
        arguments = celery_argv(argv)
        if arguments is None:
            print(f"djangostack.run: health = \"celery\" is for a Celery worker (celery ... worker); {argv[0]!r} "
                  "touches no heartbeat", file=sys.stderr)
        else:
            argv = [sys.executable, "-m", "djangostack.celery_worker", *arguments]
    try:
        os.execvpe(argv[0], argv, prepared)
    except OSError as exc:
        print(f"djangostack.run: cannot run {argv[0]!r}: {exc.strerror}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
