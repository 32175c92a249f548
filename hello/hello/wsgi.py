"""WSGI entry point for Gunicorn (hello.wsgi:application)."""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hello.settings.production")

application = get_wsgi_application()
