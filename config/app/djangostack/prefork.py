"""Celery's prefork pool (CELERY_WORKER_POOL in the stack's settings), except that a warm
shutdown does not forget a job already written to a child process. Celery's AsynPool.flush
(Consumer.on_close, before the pool drains) drops every job whose child has not yet said it
accepted it; without synack the child runs it anyway, its result finds no entry and is never
acknowledged (late acks), and the channel's close hands it back: it runs twice. Kept, its result
is read while the pool drains and acknowledged; a job not written yet is dropped as before.
"prefork" is in the module's name: Celery's Django fixup tells a prefork pool by it."""
from celery.concurrency import asynpool, prefork


class AsynPool(asynpool.AsynPool):
    def flush(self):
        handed = {job: result for job, result in self._cache.items()
                  if not getattr(result, "_accepted", True) and getattr(result, "_write_to", None) is not None}
        for job in handed:
            del self._cache[job]
        try:
            super().flush()
        finally:
            self._cache.update(handed)


class TaskPool(prefork.TaskPool):
    Pool = AsynPool
