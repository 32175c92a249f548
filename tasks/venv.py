"""`inv venv`: the app's own virtualenv, to run the project without Docker.

The tooling's virtualenv (the Pipfile) holds the tasks' packages alone; the app's packages
never go there, where they could clash with the tooling's (django-dotenv and python-dotenv
share one module name). This one is made from the requirements the image installs, by the
same script, with their hashes when they have them, with the Python `[app] python` names.
"""
from __future__ import annotations

import shutil

from .cli import stack_task
from .errors import TaskError

FOLDER = ".venv-app"
VERSION = "import sys; print('%d.%d' % sys.version_info[:2])"


def _interpreter(r, given: str | None) -> str:
    """The Python to make it with, checked to be [app] python."""
    wanted = r.stack.app.python
    found = shutil.which(given or f"python{wanted}")
    if found is None:
        raise TaskError(f"{given or f'python{wanted}'} is not on this machine ([app] python = \"{wanted}\"): "
                        "install it, or give --python with the path of a Python " + wanted)
    version = r.probe([found, "-c", VERSION], anywhere=True, prints=wanted).stdout.strip()
    if version != wanted:
        raise TaskError(f"{found} is Python {version}, but [app] python = \"{wanted}\": "
                        f"give --python with the path of a Python {wanted}")
    return found


@stack_task(hosts=None, help={
    "python": "The Python to make it with (default: python<[app] python> on the PATH).",
})
def venv(r, python=None):
    """Make the app's own virtualenv, for running it bare.

    From [app] requirements, as the image installs them (hashes checked when they have
    them); then: .venv-app/bin/python <[app] path>/manage.py runserver."""
    app = r.stack.app
    interpreter = _interpreter(r, python)
    listed = r.probe([interpreter, "config/build/requirements.py", app.requirements], prints="")
    if listed.exited != 0:
        raise TaskError(listed.stderr.strip().removeprefix("error: ") or f"{app.requirements} could not be read")
    pinned = f"{FOLDER}/requirements.txt"
    r.run([interpreter, "-m", "venv", "--clear", FOLDER], what=f"making {FOLDER} with {interpreter}")
    r.write(f"{r.root}/{pinned}", listed.stdout, mode=0o644)
    checked = ["--require-hashes", "--no-deps"] if "--hash=" in listed.stdout else []
    r.run([f"{FOLDER}/bin/python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *checked,
           "--requirement", pinned], what=f"installing {app.requirements}")
    r.report(f"{FOLDER}/ has the app's packages: {FOLDER}/bin/python {app.path}/manage.py runserver")
