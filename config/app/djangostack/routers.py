"""The stack's database router, for a project without one of its own.

The apps STACK_DATABASE_APPS names (`apps` of [[databases]] in config/stack.toml) live in
their database, every other app in `default`; each app is migrated on its own database alone,
so that `migrate --database database2` creates only the tables of the apps that live there.
"""
from djangostack.env import database_apps


class StackRouter:
    def __init__(self):
        self.routes = database_apps()

    def _db_for(self, app_label):
        return self.routes.get(app_label, "default")

    def db_for_read(self, model, **hints):
        return self._db_for(model._meta.app_label)

    db_for_write = db_for_read

    def allow_relation(self, obj1, obj2, **hints):
        # Foreign keys cannot cross databases.
        return self._db_for(obj1._meta.app_label) == self._db_for(obj2._meta.app_label)

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        return db == self._db_for(app_label)
