"""The Redis store: one cache document per key, shared by processes on many machines.

It satisfies :class:`~msal_persist._store.Store` and knows nothing of msal or JSON:

- **Writers exclude each other with a fenced lease.** The lock is a sibling key holding a
  random token, set with ``NX``-like semantics and a lease (``PX``), so a holder that died
  blocks the others for one lease at most. Taking the lock also returns the document (one
  round trip), and every write is a Lua script that checks the token first: once the lease
  expired, the write is refused (:class:`~msal_persist.LeaseExpiredError`) and nothing is
  written, so a holder that paused past its lease can never overwrite its successor's update.
  Every script is idempotent, so redis-py's retry after a lost reply cannot do harm.
- **Reads take no lock and a hit makes no round trip** (see :mod:`._redis_tracking`): the
  version of what was read is a stamp of the invalidations the server pushed to this process,
  and "unchanged?" reads the stamp locally.
- **Bad bytes** are kept in a sibling hash (``<key>:corrupt``), a bounded number of them.
- **Refresh leases** (:class:`~msal_persist._store.RefreshLeases`): one sibling key per token
  being refreshed, with an expiry of ``lease`` seconds (:mod:`._redis_lease`), so
  :func:`~msal_persist.coordinate_refreshes` coordinates processes on every machine.

Keys of one partition share one Redis Cluster hash slot: a key with a hash tag (``{...}``)
gets siblings with the same tag; a key without one gets siblings tagged with the whole key.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Hashable
from datetime import datetime, timezone
from typing import Any, Final, TypeVar

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from ._errors import LeaseExpiredError, LockTimeoutError, StoreUnavailableError
from ._lock import DEFAULT_LOCK_TIMEOUT
from ._redis_lease import RedisRefreshLease
from ._redis_tracking import Tracker, tracker_for
from ._signals import interruptible
from ._store import Snapshot
from ._text import printable

__all__ = ["DEFAULT_LEASE", "DEFAULT_PREFIX", "RedisPartitions", "RedisStore"]

_LOG: Final = logging.getLogger("msal_persist")
_T = TypeVar("_T")

DEFAULT_LEASE: Final = 10.0
"""Seconds a writer may hold a Redis store's lock before others may take it over."""

DEFAULT_TIMEOUT: Final = 5.0
"""Seconds to wait for the server's answer, for clients the store makes from a URL."""

DEFAULT_HEARTBEAT: Final = 1.0
"""Seconds between liveness checks of the invalidation channel when it is idle."""

DEFAULT_PREFIX: Final = "msal-persist:"
"""Where :class:`RedisPartitions` keeps its keys."""

KEEP_ASIDE: Final = 5
"""How many set-aside copies of bad content a key keeps (the oldest go first)."""

_WAIT_FIRST: Final = 0.001
_WAIT_MAX: Final = 0.05

# KEYS[1] lock, KEYS[2] data; ARGV[1] token, ARGV[2] lease (ms).
# Taken (or already ours: a retried call), it returns {1, document}; else {0, holder}.
_ACQUIRE: Final = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {1, redis.call('GET', KEYS[2])}
end
return {0, holder}
"""
# KEYS[1] lock, KEYS[2] data; ARGV[1] token, ARGV[2] bytes, ARGV[3] TTL (ms, 0: none).
_SAVE: Final = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[3]) > 0 then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
else
  redis.call('SET', KEYS[2], ARGV[2])
end
return 1
"""
# KEYS[1] lock, KEYS[2] data; ARGV[1] token. -1: not ours; else how many keys went.
_REMOVE: Final = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
return redis.call('DEL', KEYS[2])
"""
# KEYS[1] lock, KEYS[2] handoff list; ARGV[1] token. One element in the list wakes one
# waiter blocked on it at once; the others wake on their own short timeouts.
_RELEASE: Final = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('RPUSH', KEYS[2], '1')
redis.call('PEXPIRE', KEYS[2], 1000)
return 1
"""
# KEYS[1] lock, KEYS[2] data, KEYS[3] aside hash; ARGV[1] token ('' when not holding),
# ARGV[2] field, ARGV[3] keep, ARGV[4] TTL (ms, 0: none), ARGV[5] bytes (absent: move the
# document). -1: not ours; 0: nothing to keep; 1: kept.
_SET_ASIDE: Final = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local data = ARGV[5]
if data == nil then
  data = redis.call('GET', KEYS[2])
  if data == false then return 0 end
  redis.call('DEL', KEYS[2])
end
redis.call('HSET', KEYS[3], ARGV[2], data)
local fields = redis.call('HKEYS', KEYS[3])
table.sort(fields)
for i = 1, #fields - tonumber(ARGV[3]) do redis.call('HDEL', KEYS[3], fields[i]) end
if tonumber(ARGV[4]) > 0 then redis.call('PEXPIRE', KEYS[3], ARGV[4]) end
return 1
"""


class RedisStore:
    """One token cache in one Redis key, shared by every process that names the same key.

    Pass it as ``PersistedTokenCache(store=RedisStore(...))``. See the module docstring for
    how writers exclude each other and how a cache hit stays local yet coherent.

    Args:
        client: The application's own ``redis.Redis`` client (TLS, ACL users, Sentinel and
            retries then work as it is configured; it must not decode responses), or a URL
            (``redis://``, ``rediss://``, ``unix://``) for a client made here with
            ``timeout``.
        key: The key holding the document (see :class:`RedisPartitions` for one key per
            user and per application).
        lease: Seconds a writer may hold the lock. A holder that died blocks others this
            long at most; a holder slower than this gets :class:`LeaseExpiredError` and
            writes nothing. Also how long a refresh lease lasts (not renewed): a refresher
            that was killed delays the others this long at most, and a refresh slower than
            this may be made a second time.
        lock_timeout: Seconds to wait for another writer's lock before raising
            :class:`~msal_persist.LockTimeoutError`; ``None`` waits forever.
        ttl: Seconds the key lives after its last write (``None``: forever).
        timeout: For a client made from a URL: seconds to wait for the server to connect or
            answer (redis-py then retries twice). Every call is bounded by it.
        local_copy: Serve cache hits from memory, kept coherent by invalidations the server
            pushes. ``False`` reads the key at every cache access (one round trip each).
        heartbeat: Seconds between liveness checks of the invalidation channel; a channel
            silent for twice this long stops vouching for the local copy.

    Attributes:
        key: The key holding the document.
        round_trips: How many commands this store sent (one per read, lock, write).
        saves: How many documents it wrote.
    """

    def __init__(  # noqa: PLR0913 - each option is one documented keyword
        self,
        client: str | redis.Redis,
        key: str,
        *,
        lease: float = DEFAULT_LEASE,
        lock_timeout: float | None = DEFAULT_LOCK_TIMEOUT,
        ttl: float | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        local_copy: bool = True,
        heartbeat: float = DEFAULT_HEARTBEAT,
        _tracking_prefix: str | None = None,
        _shown_key: str | None = None,
    ) -> None:
        """Describe the store; nothing is sent to the server until the first call."""
        if not key:
            raise ValueError("the key must not be empty")
        if lease <= 0 or (ttl is not None and ttl <= 0):
            raise ValueError("lease and ttl must be positive")
        self.client = _client(client, timeout)
        self.key: Final = key
        self.lease: Final = lease
        self.lock_timeout: Final = lock_timeout
        self.ttl: Final = ttl
        self._keys = _sibling_keys(key)
        pool = getattr(self.client, "connection_pool", None)
        self._display_name = printable(f"{_server(pool)} key {_shown_key or key!r}")
        self._tracker: Tracker | None = None
        if local_copy and pool is not None:
            prefix = key if _tracking_prefix is None else _tracking_prefix
            self._tracker = tracker_for(pool, prefix.encode(), heartbeat)
        self._key_bytes = key.encode()
        self._scripts = {
            name: self.client.register_script(source)
            for name, source in (
                ("acquire", _ACQUIRE),
                ("save", _SAVE),
                ("remove", _REMOVE),
                ("release", _RELEASE),
                ("set_aside", _SET_ASIDE),
            )
        }
        self._leases: dict[str, RedisRefreshLease] = {}
        self._leases_lock = threading.Lock()
        self._token: str | None = None
        self._unsure: str | None = None  # a token the server may hold for us
        self._held: Snapshot | None = None
        self._held_by: int | None = None
        self.round_trips = 0
        self.saves = 0

    def __repr__(self) -> str:
        """Show the server and the key (never a password)."""
        return f"{type(self).__name__}({self._display_name!r})"

    @property
    def display_name(self) -> str:
        """The server and the key, printable and without credentials."""
        return self._display_name

    @property
    def local_copy(self) -> bool:
        """Whether cache hits are currently served without a round trip."""
        if self._tracker is None:
            return False
        self._tracker.ensure_running()
        return self._tracker.stamp(self._key_bytes) is not None

    # -- reads ----------------------------------------------------------------------------

    def unchanged(self, version: Hashable) -> bool:
        """Whether no write reached the key since ``version``: local, no round trip."""
        tracker = self._tracker
        if version is None or tracker is None:
            return False
        return tracker.stamp(self._key_bytes) == version

    def load(self) -> Snapshot:
        """Read the document (one round trip), or hand over the one read with the lock."""
        held = self._held
        if held is not None and self._held_by == threading.get_ident():
            self._held = None
            return held
        stamp = self._stamp()
        data = self._call("read", self.client.get, self._keys.data)
        return Snapshot(data.encode() if isinstance(data, str) else data, stamp)

    def _stamp(self) -> Hashable | None:
        # Taken before the read: see _redis_tracking for why this order proves freshness.
        tracker = self._tracker
        if tracker is None:
            return None
        tracker.ensure_running()
        return tracker.stamp(self._key_bytes)

    # -- the write section ------------------------------------------------------------------

    def acquire(self) -> None:
        """Take the lock (a lease) and read the document with it, in one round trip."""
        # A call that failed may still have taken the lock (the server ran it after we gave
        # up): asking with the same token takes it back at once instead of after its lease.
        token = self._unsure or f"{uuid.uuid4().hex} {socket.gethostname()} {os.getpid()}"
        self._unsure = token
        started = time.monotonic()
        delay = _WAIT_FIRST
        while True:
            stamp = self._stamp()
            taken, value = self._call(
                "lock",
                self._scripts["acquire"],
                keys=[self._keys.lock, self._keys.data],
                args=[token, int(self.lease * 1000)],
            )
            if taken:
                self._token, self._unsure = token, None
                self._held, self._held_by = Snapshot(value, stamp), threading.get_ident()
                _LOG.debug("acquired the lock of %s", self._display_name)
                return
            waited = time.monotonic() - started
            if self.lock_timeout is not None and waited >= self.lock_timeout:
                raise LockTimeoutError(
                    f"{self._display_name} (lock {self._keys.lock!r})",
                    self.lock_timeout,
                    _holder_pid(value),
                )
            pause = delay * random.uniform(0.5, 1.5)  # noqa: S311 - jitter, not a secret
            if self.lock_timeout is not None:
                pause = min(pause, self.lock_timeout - waited)
            with interruptible():
                # Woken at once by the holder's release (or after the pause, whichever is
                # first): no fixed polling interval between a release and the next holder.
                self._call("wait", self.client.blpop, [self._keys.handoff], max(pause, 0.001))
            delay = min(delay * 2, _WAIT_MAX)

    def release(self) -> None:
        """Give the lock back if it is still ours (the lease may have passed it on)."""
        token, self._token, self._held = self._token, None, None
        if token is None:
            return
        try:
            released = self._call(
                "unlock",
                self._scripts["release"],
                keys=[self._keys.lock, self._keys.handoff],
                args=[token],
            )
        except StoreUnavailableError as error:
            # What was written is acknowledged; the lease frees the lock for the others, and
            # our next acquire, with the same token, at once.
            self._unsure = token
            _LOG.warning("could not release the lock of %s (%s)", self._display_name, error.reason)
            return
        if not released:
            _LOG.warning(
                "the lease on %s expired before it was released; nothing was written after",
                self._display_name,
            )
        else:
            _LOG.debug("released the lock of %s", self._display_name)

    def prepare(self) -> None:
        """Nothing to sweep: a dead writer's lock expires with its lease."""

    def save(self, data: bytes) -> Hashable | None:
        """Write the document if the lock is still ours (one round trip); else raise."""
        written = self._call(
            "write",
            self._scripts["save"],
            keys=[self._keys.lock, self._keys.data],
            args=[self._holding(), data, self._ttl_ms()],
        )
        if not written:
            raise LeaseExpiredError(self._display_name, self.lease)
        self.saves += 1
        _LOG.debug("wrote %s (%d bytes)", self._display_name, len(data))
        tracker = self._tracker
        if tracker is None:
            return None
        # Our own write's invalidation usually arrived with the reply: count it now, so the
        # next read need not fetch back what we just wrote. If it comes later, that read
        # makes one round trip, nothing worse. No other writer can write while we hold the
        # lock, so nothing else can hide behind this stamp.
        return tracker.settle(self._key_bytes)

    def make_durable(self) -> None:
        """Nothing to do here: durability is the server's (``appendfsync``, replicas)."""

    def remove(self) -> bool:
        """Delete the document if the lock is still ours; return whether there was one."""
        removed = self._call(
            "write",
            self._scripts["remove"],
            keys=[self._keys.lock, self._keys.data],
            args=[self._holding()],
        )
        if removed < 0:
            raise LeaseExpiredError(self._display_name, self.lease)
        return bool(removed)

    def set_aside(self, data: bytes | None = None) -> str | None:
        """Keep bad content in the hash ``<key>:corrupt`` under a UTC timestamp field."""
        field = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        args: list[Any] = [self._token or "", field, KEEP_ASIDE, self._ttl_ms()]
        if data is not None:
            args.append(data)
        kept = self._call(
            "set aside",
            self._scripts["set_aside"],
            keys=[self._keys.lock, self._keys.data, self._keys.aside],
            args=args,
        )
        if kept < 0:
            raise LeaseExpiredError(self._display_name, self.lease)
        return printable(f"{self._keys.aside} field {field}") if kept else None

    def set_aside_copies(self) -> list[str]:
        """The fields of the set-aside hash, oldest first (one round trip)."""
        fields = self._call("read", self.client.hkeys, self._keys.aside)
        return sorted(f.decode() if isinstance(f, bytes) else str(f) for f in fields)

    def lock_holder(self) -> tuple[str, float] | None:
        """Who holds the lock (``"<host> <pid>"``) and for how many more seconds, or None."""
        pipe = self.client.pipeline(transaction=False)
        pipe.get(self._keys.lock)
        pipe.pttl(self._keys.lock)
        value, ttl = self._call("read", pipe.execute)
        if value is None:
            return None
        holder = value.decode(errors="replace").partition(" ")[2]
        return holder, max(0, ttl) / 1000

    def refresh_lease(self, key: str) -> RedisRefreshLease:
        """The lease on refreshing the token ``key`` names: the sibling ``...:refresh-<key>``.

        One object per key, so that the threads of this process queue on it in memory.
        """
        if not key or not key.isalnum() or not key.isascii():
            raise ValueError(f"a lease key is letters and digits, not {key!r}")
        with self._leases_lock:
            lease = self._leases.get(key)
            if lease is None:
                lease = self._leases[key] = RedisRefreshLease(
                    self.client,
                    f"{self._keys.siblings}:refresh-{key}",
                    expiry=self.lease,
                    call=self._call,
                    shown=f"{self._display_name} refresh lease {key}",
                )
            return lease

    def close(self) -> None:
        """Close this process's invalidation channel for the store's prefix (rarely needed)."""
        if self._tracker is not None:
            self._tracker.close()

    # -- plumbing -------------------------------------------------------------------------

    def _holding(self) -> str:
        if self._token is None:
            raise RuntimeError(f"{self._display_name}: write outside the lock")
        return self._token

    def _ttl_ms(self) -> int:
        return 0 if self.ttl is None else max(1, int(self.ttl * 1000))

    def _call(self, operation: str, function: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        self.round_trips += 1
        try:
            return function(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as error:
            reason = f"the Redis server did not answer ({printable(str(error))})"
            raise StoreUnavailableError(self._display_name, operation, reason) from None
        except redis.RedisError as error:
            reason = f"the Redis server refused it ({printable(str(error))})"
            raise StoreUnavailableError(self._display_name, operation, reason) from None


class RedisPartitions:
    """One Redis key per user and per application, as web apps partition a token cache.

    A web app or API serving many users keeps each signed-in user's tokens under their own
    key (their home account id) and the application's own tokens (client credentials) under
    ``<client id>_<tenant>_AppTokenCache``, as Microsoft.Identity.Web does: every request
    loads and writes only its user's small document. Each key is
    ``<prefix>{<partition>}``: the hash tag keeps a partition's keys in one Redis Cluster
    slot. Stores made here share the client and one invalidation channel per process.

    Args:
        client: As :class:`RedisStore`'s.
        prefix: Put before every key; also what the invalidation channel watches.
        **options: Passed to every :class:`RedisStore` (``lease``, ``ttl``, ...).
    """

    def __init__(
        self, client: str | redis.Redis, *, prefix: str = DEFAULT_PREFIX, **options: Any
    ) -> None:
        """Describe the partitions; nothing is sent to the server yet."""
        self.client = _client(client, options.pop("timeout", DEFAULT_TIMEOUT))
        self.prefix: Final = prefix
        self._options = options
        self._tracker: Tracker | None = None  # kept: every partition's store shares it

    def key(self, partition: str) -> str:
        """The key of ``partition``: ``<prefix>{<partition>}``."""
        if not partition or "{" in partition or "}" in partition:
            raise ValueError("a partition is a non-empty string without braces")
        return f"{self.prefix}{{{partition}}}"

    def store(self, partition: str) -> RedisStore:
        """The store of any partition; its name is never shown whole (it may be personal)."""
        digest = hashlib.sha256(partition.encode()).hexdigest()[:12]
        store = RedisStore(
            self.client,
            self.key(partition),
            _tracking_prefix=self.prefix,
            _shown_key=f"{self.prefix}{{sha256:{digest}...}}",
            **self._options,
        )
        self._tracker = store._tracker  # noqa: SLF001 - its own module's store
        return store

    def for_user(self, home_account_id: str) -> RedisStore:
        """The store of one signed-in user's tokens (keyed by their home account id)."""
        return self.store(home_account_id)

    def for_app(self, client_id: str, tenant: str) -> RedisStore:
        """The store of an application's own tokens (client credentials)."""
        return self.store(app_partition(client_id, tenant))


def app_partition(client_id: str, tenant: str) -> str:
    """The partition of an application's own tokens: ``<client id>_<tenant>_AppTokenCache``."""
    return f"{client_id}_{tenant}_AppTokenCache"


class _Keys:
    __slots__ = ("aside", "data", "handoff", "lock", "siblings")

    def __init__(self, data: str, siblings: str) -> None:
        self.data, self.siblings = data, siblings
        self.lock, self.aside, self.handoff = (
            f"{siblings}:lock",
            f"{siblings}:corrupt",
            f"{siblings}:handoff",
        )


def _sibling_keys(key: str) -> _Keys:
    opening = key.find("{")
    closing = key.find("}", opening + 1) if opening >= 0 else -1
    if closing > opening + 1:  # a hash tag: the siblings share it
        return _Keys(key, key)
    # No hash tag: the whole key decides the slot, and so does a tag made of it.
    return _Keys(key, f"{{{key}}}")


_URL_CLIENTS: dict[tuple[str, float], redis.Redis] = {}
_URL_CLIENTS_LOCK: Final = threading.Lock()


def _client(client: str | redis.Redis, timeout: float) -> redis.Redis:
    if isinstance(client, str):
        # One client per URL and process: a web app that makes a store per request then
        # shares one connection pool and one invalidation channel instead of opening more.
        with _URL_CLIENTS_LOCK:
            made = _URL_CLIENTS.get((client, timeout))
            if made is None:
                made = redis.Redis.from_url(
                    client,
                    socket_timeout=timeout,
                    socket_connect_timeout=timeout,
                    retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
                )
                _URL_CLIENTS[client, timeout] = made
            return made
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", {})
    if kwargs.get("decode_responses"):
        raise ValueError("the cache is bytes: pass a redis client made with decode_responses=False")
    if pool is not None and kwargs.get("socket_timeout") is None:
        _LOG.warning(
            "the redis client given to msal-persist has no socket_timeout: a server that "
            "stops answering makes token calls wait forever"
        )
    return client


def _server(pool: Any) -> str:
    kwargs = getattr(pool, "connection_kwargs", None)
    if kwargs is None:
        return "redis"
    if kwargs.get("path"):
        return f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
    if kwargs.get("service_name"):
        return f"redis-sentinel {kwargs['service_name']}/{kwargs.get('db', 0)}"
    scheme = "rediss" if "SSL" in getattr(pool, "connection_class", type).__name__ else "redis"
    host, port = kwargs.get("host", "localhost"), kwargs.get("port", 6379)
    return f"{scheme}://{host}:{port}/{kwargs.get('db', 0)}"


def _holder_pid(value: object) -> int | None:
    # The token is "<random> <host> <pid>": a pid only means something on this host.
    if not isinstance(value, bytes):
        return None
    parts = value.decode(errors="replace").split(" ")
    if len(parts) == 3 and parts[1] == socket.gethostname() and parts[2].isdigit():
        return int(parts[2])
    return None
