"""The serving section's ceiling: a bare WSGI application that answers every request with
the bytes of the Django page (its status line, headers and body, recorded from the app),
doing no other work. bench/serving.py runs it in a container of the app image, under the
same Gunicorn configuration (config/app/djangostack/gunicorn_conf.py), behind the same Nginx.

Read at import from the folder it is mounted in (/bench): page.body and page.json."""
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "page.body"), "rb") as f:
    BODY = f.read()
with open(os.path.join(HERE, "page.json")) as f:
    RECORDED = json.load(f)
STATUS = RECORDED["status"]
HEADERS = [(name, value) for name, value in RECORDED["headers"]]


def application(environ, start_response):
    start_response(STATUS, HEADERS)
    return [BODY]
