from django.contrib import admin

from .models import Note, Tick, WordCount

admin.site.register(Note)
admin.site.register(WordCount)
admin.site.register(Tick)
