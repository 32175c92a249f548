"""The project's Celery application, in Celery's layout for Django: its configuration is the
CELERY_* Django settings, its tasks the tasks.py of every installed app. Creating it connects
to nothing; only sending or consuming a task does (see notes.views)."""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hello.settings.dev")

app = Celery("hello")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
