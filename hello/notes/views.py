from django.conf import settings
from django.db import transaction
from django.http import HttpResponseBadRequest
from django.shortcuts import redirect, render

from .models import Note
from .tasks import count_words


def index(request):
    """The latest notes with their word counts; POST text= adds one."""
    if request.method == "POST":
        text = request.POST.get("text", "").strip()
        if not text:
            return HttpResponseBadRequest("text is required\n", content_type="text/plain")
        note = Note.objects.create(text=text)
        if settings.CELERY_BROKER_URL:
            # Sent once the note is committed, so that a worker always finds it.
            transaction.on_commit(lambda: count_words.delay(note.pk), using=note._state.db)
        else:
            # No broker, no worker: counted here, and nothing connects anywhere.
            count_words(note.pk)
        return redirect("notes")
    notes = Note.objects.prefetch_related("word_counts")[:20]
    return render(request, "notes/index.html", {"notes": notes})
