"""Procedures the tasks share, written once against a Runner: waiting until the stack
serves, Django's manage.py steps, copying volumes, dumps, backup files and their
transfers, and the release steps of a deploy."""
