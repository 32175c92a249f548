from django.db import models


class Note(models.Model):
    """A small model kept in database2 when the stack has one (see hello.routers)."""

    text = models.TextField()
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self):
        return self.text[:50]
