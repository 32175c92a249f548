"""The notes' background jobs (Celery finds them: hello.celery autodiscovers tasks.py). Each run
appends a row, so that a job lost or run twice can be counted."""
from celery import shared_task
from celery.signals import before_task_publish
from celery.utils.log import get_task_logger
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from .models import Note, Tick, WordCount

TICK = "notes.tasks.tick"
logger = get_task_logger(__name__)


@shared_task
def count_words(note_id):
    note = Note.objects.get(pk=note_id)
    counted = WordCount.objects.create(note=note, words=len(note.text.split()))
    # The job's id and its note in one line: a note counted twice shows which deliveries ran.
    logger.info("note %s: %s words", note_id, counted.words)


@before_task_publish.connect
def stamp_when_sent(sender=None, headers=None, **kwargs):
    """Beat sends a tick when it is due: the time it was sent is the tick's scheduled time."""
    if sender == TICK and headers is not None:
        headers.setdefault("scheduled", timezone.now().isoformat())


@shared_task(bind=True)
def tick(self):
    """Run by beat every HELLO_TICK_SECONDS (CELERY_BEAT_SCHEDULE in the settings)."""
    scheduled = self.request.get("scheduled")
    Tick.objects.create(task_id=self.request.id or "", scheduled=scheduled and parse_datetime(scheduled),
                        origin=self.request.get("origin") or "")
