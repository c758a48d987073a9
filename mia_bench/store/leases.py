"""Leases per (group, run index), in the tracking store: one trainer per run, anywhere.

A lease must work for any number of processes, and later machines, that share one
tracking store (SQLite, PostgreSQL, or an MLflow server over REST). It is built on the
one atomic primitive all of them offer: **creating a model version**, which the store
numbers 1, 2, 3, ... per registered model in one transaction (``max + 1``, retried on a
conflict), so two versions never share a number and every lower number is committed
before a higher one is handed out.

* Each group has a registered model ``mia-lease.<experiment_id>.<group>``.
* To acquire run ``i``, a process *stakes a claim*: it creates a version with the tags
  ``run_index``, ``host``, ``pid``, ``pidns``, ``token`` (a uuid) and ``heartbeat`` (its
  clock). It then lists the claims of ``run_index`` ``i``: the **lowest live** claim holds
  the lease. If a lower live claim exists, it releases its own claim and raises
  :class:`LeaseHeld`; otherwise it holds, and a daemon thread refreshes ``heartbeat``.
  Any two candidates agree: the higher one sees the lower one, which never sees it.
* A claim is **stale** (not live) once it is released (tag ``released``, set on
  :meth:`Lease.release` and at normal exit), once its heartbeat is older than
  :data:`STALE_AFTER_S`, or at once when its process is gone and it ran on this host
  (same host name and pid namespace): a ``kill -9``-ed holder is taken over immediately
  on its machine, and after :data:`STALE_AFTER_S` elsewhere. Clocks of the machines
  must agree to well within that.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mia_bench.errors import UserError

HEARTBEAT_S = 15.0
STALE_AFTER_S = 90.0
EXIT_LEASE_HELD = 75  # EX_TEMPFAIL: another process trains this run; try later
EXIT_ALREADY_TRAINED = 76  # a fresh fit of a run its group already has FINISHED
SOURCE = "mia-bench-lease:/lease"  # model versions need a source; nothing lives there
Clock = Callable[[], float]
_log = logging.getLogger(__name__)
_held: dict[str, Lease] = {}


class LeaseHeld(UserError):
    """Another live process holds the lease of this run; ``holder`` names it."""

    exit_status = EXIT_LEASE_HELD

    def __init__(self, group: str, run_index: int, holder: str) -> None:
        self.holder = holder
        super().__init__(
            f"run {run_index} of group {group!r} is being trained by {holder}: left to it "
            f"(if that process is gone, its lease lapses at once on its host and after "
            f"{STALE_AFTER_S:.0f} s elsewhere; then train it again)"
        )


@dataclass(frozen=True)
class Identity:
    """Who claims: host name, pid, pid namespace and a uuid of the claim."""

    host: str
    pid: int
    pidns: str
    token: str

    @classmethod
    def current(cls) -> Identity:
        """This process, with a fresh token."""
        return cls(socket.gethostname(), os.getpid(), _pid_namespace(), uuid.uuid4().hex)

    @property
    def holder(self) -> str:
        """``host:pid``, as messages show it."""
        return f"{self.host}:{self.pid}"


@dataclass(frozen=True)
class Claim:
    """One model version of a lease model: one process's claim on one run index."""

    version: int
    run_index: int
    who: Identity
    heartbeat: float
    released: bool

    @classmethod
    def from_version(cls, mv) -> Claim:
        """The claim that an MLflow ``ModelVersion`` records."""
        t = mv.tags
        pid = int(t.get("pid", -1))
        who = Identity(t.get("host", "?"), pid, t.get("pidns", ""), t.get("token", ""))
        heartbeat = float(t.get("heartbeat", 0))
        return cls(int(mv.version), int(t["run_index"]), who, heartbeat, "released" in t)

    def is_live(self, now: float, here: Identity, stale_after_s: float = STALE_AFTER_S) -> bool:
        """Not released, heartbeat recent, and (when on this host) its process alive."""
        if self.released or now - self.heartbeat > stale_after_s:
            return False
        same_host = (self.who.host, self.who.pidns) == (here.host, here.pidns)
        return not same_host or pid_alive(self.who.pid)


def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return ""


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (a zombie counts as dead).

    >>> pid_alive(os.getpid()), pid_alive(-1)
    (True, False)
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


def lease_model_name(exp_id: str, group: str) -> str:
    """Registered-model name of a group's leases (``/``, ``:``, ``%`` and quotes escaped).

    >>> lease_model_name("1", "cifar10_cnn+crop"), lease_model_name("1", "a/b")
    ('mia-lease.1.cifar10_cnn+crop', 'mia-lease.1.a%2Fb')
    """
    return f"mia-lease.{exp_id}.{quote(group, safe='+=,@()[]{}!~* ')}"


def ensure_lease_model(client: MlflowClient, exp_id: str, group: str) -> str:
    """Name of the group's lease model, created (with a description) if missing."""
    name = lease_model_name(exp_id, group)
    description = (
        f"mia-bench leases of group {group!r} in experiment {exp_id}: one version per "
        "attempt to train a run (tag run_index); the lowest live one trains it. Not a "
        "model; safe to delete while no fleet of this group runs."
    )
    try:
        client.create_registered_model(name, description=description)
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    return name


def stake_claim(
    client: MlflowClient, name: str, run_index: int, now: float, who: Identity
) -> Claim:
    """Create this process's claim (a new model version) on ``run_index``."""
    tags = {"run_index": str(run_index), "host": who.host, "pid": str(who.pid)}
    tags |= {"pidns": who.pidns, "token": who.token, "heartbeat": repr(now)}
    mv = client.create_model_version(
        name, SOURCE, tags=tags, description=who.holder, await_creation_for=0
    )
    return Claim(int(mv.version), run_index, who, now, False)


def claims_of(client: MlflowClient, name: str, run_index: int) -> list[Claim]:
    """Every claim on ``run_index``, lowest version first."""
    query = f"name = '{name}' and tag.run_index = '{run_index}'"
    found, token = [], None
    while True:
        page = client.search_model_versions(query, max_results=1000, page_token=token)
        found += [Claim.from_version(mv) for mv in page]
        token = page.token
        if not token:
            return sorted(found, key=lambda c: c.version)


def lowest_live(claims: list[Claim], now: float, here: Identity) -> Claim | None:
    """The claim that holds the lease: the lowest-numbered live one, or None."""
    return next((c for c in claims if c.is_live(now, here)), None)


class Lease:
    """A held lease: heartbeats until :meth:`release` (called at normal exit too).

    Args:
        client: the tracking store's client.
        name: the group's lease model.
        group: the group (for messages).
        claim: the claim that holds.
        clock: time source (seconds), injectable for tests.
        heartbeat_s: seconds between heartbeats; 0 starts no thread.
    """

    def __init__(
        self,
        client: MlflowClient,
        name: str,
        group: str,
        claim: Claim,
        clock: Clock = time.time,
        heartbeat_s: float = HEARTBEAT_S,
    ) -> None:
        self.client, self.name, self.group = client, name, group
        self.claim, self.clock = claim, clock
        self.released = False
        self._stop = threading.Event()
        self._thread = None
        if heartbeat_s > 0:
            self._thread = threading.Thread(
                target=self._beat_until_stopped, args=(heartbeat_s,), daemon=True
            )
            self._thread.start()
        _held[claim.who.token] = self
        atexit.register(self.release)

    @property
    def holder(self) -> str:
        """``host:pid`` of the holding process."""
        return self.claim.who.holder

    @property
    def run_index(self) -> int:
        """The run this lease is for."""
        return self.claim.run_index

    def beat(self) -> None:
        """Record that the holder is alive, now."""
        self._tag("heartbeat", repr(self.clock()))

    def _beat_until_stopped(self, heartbeat_s: float) -> None:
        while not self._stop.wait(heartbeat_s):
            try:
                self.beat()
            except Exception as err:  # noqa: BLE001 - keep beating; the store may be back
                _log.warning("lease heartbeat of run %s failed: %s", self.run_index, err)

    def _tag(self, key: str, value: str) -> None:
        self.client.set_model_version_tag(self.name, str(self.claim.version), key, value)

    def release(self) -> None:
        """Give the lease up (idempotent); the next claim on this run can hold it."""
        if self.released:
            return
        self.released = True
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        _held.pop(self.claim.who.token, None)
        atexit.unregister(self.release)
        try:
            self._tag("released", repr(self.clock()))
        except Exception as err:  # noqa: BLE001 - it lapses by heartbeat or pid anyway
            _log.warning("could not release the lease of run %s: %s", self.run_index, err)


def confirm_claim(
    client: MlflowClient,
    name: str,
    group: str,
    claim: Claim,
    clock: Clock = time.time,
    heartbeat_s: float = HEARTBEAT_S,
) -> Lease:
    """Hold the lease with ``claim`` if no lower claim is live, else withdraw it.

    Raises:
        LeaseHeld: a lower live claim holds the run (``claim`` is marked released).
    """
    try:
        lower = [c for c in claims_of(client, name, claim.run_index) if c.version < claim.version]
        holder = lowest_live(lower, clock(), claim.who)
        if holder is not None:
            raise LeaseHeld(group, claim.run_index, holder.who.holder)
    except BaseException:  # withdraw the claim: it must not block the next candidate
        client.set_model_version_tag(name, str(claim.version), "released", repr(clock()))
        raise
    return Lease(client, name, group, claim, clock, heartbeat_s)


def acquire_lease(
    client: MlflowClient,
    exp_id: str,
    group: str,
    run_index: int,
    clock: Clock = time.time,
    heartbeat_s: float = HEARTBEAT_S,
) -> Lease:
    """The lease of ``(group, run_index)`` for this process, held until released or exit.

    Raises:
        LeaseHeld: another live process holds it; the message names it.
    """
    name = ensure_lease_model(client, exp_id, group)
    claim = stake_claim(client, name, run_index, clock(), Identity.current())
    return confirm_claim(client, name, group, claim, clock, heartbeat_s)


def lease_holder(
    client: MlflowClient, exp_id: str, group: str, run_index: int, clock: Clock = time.time
) -> str | None:
    """``host:pid`` of the live holder of ``(group, run_index)``, or None."""
    claims = claims_of(client, lease_model_name(exp_id, group), run_index)
    holder = lowest_live(claims, clock(), Identity.current())
    return holder.who.holder if holder else None


def release_held() -> None:
    """Release every lease this process holds (at the end of a fit)."""
    for lease in list(_held.values()):
        lease.release()
