#!/usr/bin/env python
"""Django's command-line utility for the hello project."""
import os
import sys


def main():
    # Development settings by default so that `python hello/manage.py runserver` works on a
    # bare checkout; the container sets DJANGO_SETTINGS_MODULE=hello.settings.production.
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hello.settings.dev")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
