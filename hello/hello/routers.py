"""Send some apps' models to a database of their own.

ROUTES maps an app label to a database alias. An app whose database is not configured (a
stack with database1 only, or SQLite on a laptop) falls back to `default`, so the project
works the same with one database or several. See docs/databases.md, "Using a second database".
"""
from django.conf import settings

ROUTES = {"notes": "database2"}


class AppDatabaseRouter:
    def _db_for(self, app_label):
        alias = ROUTES.get(app_label)
        return alias if alias in settings.DATABASES else "default"

    def db_for_read(self, model, **hints):
        return self._db_for(model._meta.app_label)

    db_for_write = db_for_read

    def allow_relation(self, obj1, obj2, **hints):
        # Foreign keys cannot cross databases.
        return self._db_for(obj1._meta.app_label) == self._db_for(obj2._meta.app_label)

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        return db == self._db_for(app_label)
