"""Kombu's Redis transport, with a job taken off its queue and recorded as unacknowledged in one
step (CELERY_BROKER_TRANSPORT in the stack's settings, for a Redis or Valkey broker).

Kombu's own transport pops a job with BRPOP and records it in the `unacked` hash with a second
command once the worker has read the reply: a worker killed between the two (SIGKILL, the OOM
killer, a stop past its grace period) loses the job, which is then in neither place. On a loaded
machine the worker may wait tens of milliseconds between the two, long enough to lose one job
in two kills at 20 jobs a second. Here a Lua script moves the job from its queue to `unacked`
atomically, so a killed worker's jobs are all in `unacked` and come back after the visibility
timeout like any other job in hand. Redis cannot block inside a script: when every queue is
empty the worker waits with `BLMOVE queue queue RIGHT RIGHT timeout`, which returns as soon as
the first queue has a job and moves nothing (a list rotated onto itself), then takes it with the
script. A job on another of the worker's queues (or another priority) waits at most the
transport's polling interval (1 s). BLMOVE needs Redis 6.2 or later (Valkey: any).
"""
from time import monotonic, time

from kombu.transport import redis, virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

# KEYS: the queues' lists in the order to take from, then unacked_index and unacked; ARGV: now,
# then for each list "1" if its consumer acknowledges (the job is recorded) or "0" (no_ack, as
# Celery's replies: nothing to record). The unacked entry is kombu's own ([message, exchange,
# routing key], as QoS.append writes it), built around the message's text so that the message
# is stored exactly as it was sent.
TAKE = """
local queues = #KEYS - 2
for i = 1, queues do
  local item = redis.call('RPOP', KEYS[i])
  if item and ARGV[i + 1] == '0' then
    return {KEYS[i], item}
  elseif item then
    local properties = cjson.decode(item)['properties']
    local info, tag = properties['delivery_info'], properties['delivery_tag']
    redis.call('ZADD', KEYS[queues + 1], ARGV[1], tag)
    redis.call('HSET', KEYS[queues + 2], tag,
               '[' .. item .. ', ' .. cjson.encode(info['exchange']) .. ', ' .. cjson.encode(info['routing_key']) .. ']')
    return {KEYS[i], item}
  end
end
return false
"""


class QoS(redis.QoS):
    def append(self, message, delivery_tag):
        # A job the script took is in unacked already: only the worker's own count is left.
        if delivery_tag in self.channel.taken:
            self.channel.taken.discard(delivery_tag)
            virtual.QoS.append(self, message, delivery_tag)
        else:
            super().append(message, delivery_tag)


class Channel(redis.Channel):
    QoS = QoS

    def __init__(self, *args, **kwargs):
        self.taken = set()  # delivery tags the script recorded, until QoS.append sees them
        self.no_ack_queues = set()
        self._sent = None  # the command whose reply the connection waits for
        self._wait_next = False  # the last take found every queue empty
        super().__init__(*args, **kwargs)

    def basic_consume(self, queue, no_ack, *args, **kwargs):
        (self.no_ack_queues.add if no_ack else self.no_ack_queues.discard)(queue)
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    def _brpop_start(self, timeout=None):
        if timeout is None:
            timeout = self.brpop_timeout
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        prefix = self.global_keyprefix
        taken = [(queue, pri) for pri in self.priority_steps for queue in queues]
        keys = [prefix + self._q_for_pri(queue, pri) for queue, pri in taken]
        if self._wait_next:
            command = ["BLMOVE", keys[0], keys[0], "RIGHT", "RIGHT", timeout or 0]
        else:
            command = ["EVAL", TAKE, len(keys) + 2, *keys, prefix + self.unacked_index_key,
                       prefix + self.unacked_key, repr(time()),
                       *("0" if queue in self.no_ack_queues else "1" for queue, _ in taken)]
        self._sent = command[0]
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()
        self.client.connection.send_command(*command)

    def _brpop_read(self, **options):
        sent, self._sent = self._sent, None
        try:
            try:
                reply = self.client.parse_response(self.client.connection, sent, **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if sent == "EVAL" and reply:
                key, item = reply
                dest = bytes_to_str(key)[len(self.global_keyprefix):].rsplit(self.sep, 1)[0]
                self._queue_cycle.rotate(dest)
                payload = loads(bytes_to_str(item))
                if dest not in self.no_ack_queues:
                    self.taken.add(payload["properties"]["delivery_tag"])
                self.connection._deliver(payload, dest)
                return True
            # Nothing taken: wait for a job, or take the one the wait saw.
            self._wait_next = sent == "EVAL"
            raise redis.Empty()
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()


class Transport(redis.Transport):
    Channel = Channel


# What Channel replaces and calls of kombu's own (private, so a kombu release may rename them):
# where one is missing the settings keep kombu's own transport rather than start a worker that
# fails on its first job.
INTERNALS = ("_brpop_start", "_brpop_read", "_flush_brpop_reauth", "_q_for_pri")


def fits(channel=redis.Channel):
    """Whether this kombu's Redis channel has every internal the stack's transport relies on."""
    return all(callable(getattr(channel, name, None)) for name in INTERNALS)
