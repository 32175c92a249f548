"""The example's background job: a note's words are counted by a Celery worker when the stack
has a broker (CELERY_BROKER_URL), and in the request otherwise, where nothing may connect
anywhere (a project without a broker pays nothing). Run in a subprocess, as in the container."""
import json
import os
import subprocess
import sys
from pathlib import Path

HELLO = Path(__file__).resolve().parent.parent / "hello"

# Any connection fails loudly: counting without a broker must not even try one.
POST_A_NOTE = """
import json, socket

def refuse(self, address):
    raise AssertionError(f"tried to connect to {address}")

socket.socket.connect = socket.socket.connect_ex = refuse
import django

django.setup()
from django.conf import settings
from django.core.management import call_command
from django.test import Client

call_command("migrate", verbosity=0)
from notes.models import WordCount

response = Client(HTTP_HOST="localhost").post("/notes/", {"text": "three  little\\nwords"})
queued = []
if settings.CELERY_BROKER_URL:
    from hello.celery import app

    with app.connection_for_read() as conn:
        message = conn.SimpleQueue("celery").get(timeout=5)
        queued.append([message.headers["task"], message.headers["argsrepr"]])
        message.ack()
page = Client(HTTP_HOST="localhost").get("/notes/").content.decode()
print(json.dumps({"status": response.status_code, "location": response.get("Location"),
                  "counts": [[c.note.text, c.words] for c in WordCount.objects.all()], "queued": queued,
                  "page": page}))
"""


def post_a_note(tmp_path, **env):
    environ = {"PATH": os.environ["PATH"], "DJANGO_SETTINGS_MODULE": "hello.settings.dev",
               "DJANGO_SQLITE_PATH": str(tmp_path / "db.sqlite3"), **env}
    result = subprocess.run([sys.executable, "-c", POST_A_NOTE], cwd=HELLO, env=environ, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_without_a_broker_a_new_note_is_counted_in_the_request_and_nothing_connects(tmp_path):
    seen = post_a_note(tmp_path)
    assert (seen["status"], seen["location"]) == (302, "/notes/")
    assert seen["counts"] == [["three  little\nwords", 3]] and seen["queued"] == []
    assert "3 words" in seen["page"]


def test_with_a_broker_a_new_note_is_sent_to_the_workers_not_counted_in_the_request(tmp_path):
    # Kombu's in-memory transport: a real broker protocol, inside the process.
    seen = post_a_note(tmp_path, CELERY_BROKER_URL="memory://")
    assert seen["status"] == 302 and seen["counts"] == []
    assert seen["queued"] == [["notes.tasks.count_words", "(1,)"]]
    assert "counting" in seen["page"]


# A tick sent (as beat sends it) and run the way a worker runs a message it received.
RUN_A_TICK = """
import json
import django

django.setup()
from django.core.management import call_command

call_command("migrate", verbosity=0)
from celery.worker.request import Request
from hello.celery import app
from notes.models import Tick
from notes.tasks import tick

sent = tick.apply_async()
with app.connection_for_read() as conn:
    message = conn.SimpleQueue("celery").get(timeout=5)
    Request(message, app=app).execute()
    message.ack()
row = Tick.objects.get()
print(json.dumps({"sent": sent.id, "header": message.headers.get("scheduled"), "task_id": row.task_id,
                  "scheduled": row.scheduled and row.scheduled.isoformat(), "ran_after": row.at >= row.scheduled,
                  "origin": row.origin, "sender": message.headers["origin"]}))
"""


def test_a_tick_records_its_task_id_and_when_beat_sent_it(tmp_path):
    environ = {"PATH": os.environ["PATH"], "DJANGO_SETTINGS_MODULE": "hello.settings.dev",
               "DJANGO_SQLITE_PATH": str(tmp_path / "db.sqlite3"), "CELERY_BROKER_URL": "memory://"}
    result = subprocess.run([sys.executable, "-c", RUN_A_TICK], cwd=HELLO, env=environ, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.splitlines()[-1])
    assert seen["task_id"] == seen["sent"] and seen["header"] and seen["scheduled"] == seen["header"], seen
    assert seen["ran_after"] and seen["origin"] == seen["sender"], seen


def settings_of(*names, **env):
    code = "from django.conf import settings; import json; print(json.dumps({n: getattr(settings, n) for n in %r}))"
    result = subprocess.run([sys.executable, "manage.py", "shell", "-c", code % (names,)], cwd=HELLO,
                            env={"PATH": os.environ["PATH"], **env}, capture_output=True, text=True, timeout=60)
    return result.returncode, result.stdout.strip().splitlines()[-1] if result.returncode == 0 else result.stderr


def test_beat_ticks_every_hello_tick_seconds_sixty_by_default():
    code, out = settings_of("CELERY_BEAT_SCHEDULE", "CELERY_BROKER_URL")
    assert code == 0, out
    assert json.loads(out) == {"CELERY_BEAT_SCHEDULE": {"tick": {"task": "notes.tasks.tick", "schedule": 60}},
                               "CELERY_BROKER_URL": ""}
    code, out = settings_of("CELERY_BEAT_SCHEDULE", HELLO_TICK_SECONDS="5")
    assert code == 0 and json.loads(out)["CELERY_BEAT_SCHEDULE"]["tick"]["schedule"] == 5, out


def test_a_tick_interval_under_a_second_is_refused_in_one_line():
    code, out = settings_of("CELERY_BEAT_SCHEDULE", HELLO_TICK_SECONDS="0")
    assert code != 0
    assert "ValueError: HELLO_TICK_SECONDS=0 is not valid: a number of seconds, 1 or more" in out
