"""The notes' background jobs (Celery finds them: hello.celery autodiscovers tasks.py). Each run
appends a row, so that a job lost or run twice can be counted."""
from celery import shared_task

from .models import Note, Tick, WordCount


@shared_task
def count_words(note_id):
    note = Note.objects.get(pk=note_id)
    WordCount.objects.create(note=note, words=len(note.text.split()))


@shared_task
def tick():
    """Run by beat every HELLO_TICK_SECONDS (CELERY_BEAT_SCHEDULE in the settings)."""
    Tick.objects.create()
