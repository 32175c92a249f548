"""The stack's own Django glue, around a project it does not edit.

`settings` is DJANGO_SETTINGS_MODULE: it derives the variables projects conventionally read
from the stack's secret files, imports the project's settings, then sets what the stack
decides (databases, hosts, HTTPS, static and media folders). `wsgi` answers /healthz and
hands everything else to the project's WSGI application; `routers` sends apps to their
database; `gunicorn_conf` configures the server; `run` starts a
process of the stack ([[processes]]) with the app's variables. The image puts this package on PYTHONPATH.
"""
