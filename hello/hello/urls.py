from django.conf import settings
from django.contrib import admin
from django.urls import path
from notes import views as notes_views

from . import views

urlpatterns = [
    path("", views.index, name="index"),
    path("notes/", notes_views.index, name="notes"),
    path("admin/", admin.site.urls),
]

if settings.TEST_VIEWS:
    urlpatterns += [path("test/slow/", views.slow), path("test/scheme/", views.scheme)]

if settings.DEBUG:
    from django.conf.urls.static import static

    urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)
