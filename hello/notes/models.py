from django.db import models
from django.utils import timezone


class Note(models.Model):
    """A small model kept in database2 when the stack has one (see hello.routers)."""

    text = models.TextField()
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self):
        return self.text[:50]


class WordCount(models.Model):
    """One run of notes.tasks.count_words: a row per run, so a job that ran twice shows."""

    note = models.ForeignKey(Note, on_delete=models.CASCADE, related_name="word_counts")
    words = models.PositiveIntegerField()
    counted_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-counted_at"]


class Tick(models.Model):
    """One run of the scheduled notes.tasks.tick: the task's id (a tick delivered twice has the
    same), when beat sent it and which beat process did (its origin, pid@host)."""

    at = models.DateTimeField(default=timezone.now)
    task_id = models.CharField(max_length=64, blank=True)
    scheduled = models.DateTimeField(null=True)
    origin = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["-at"]
