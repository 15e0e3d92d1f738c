"""Claims in a shared result store: who computes a run (owner), until when (lease), and whether that owner still
lives; ResultStore keeps the rows, this module decides who may take them."""
from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from enum import StrEnum

# Claims let several sweeps share one store. Every holder renews its leases every RENEW_S seconds from a
# background thread, so a claim lives as long as its process whatever the run is doing. On the same host a
# dead owner is seen at once (its pid is gone, a zombie, or now another process); the lease only decides for
# a holder on another machine sharing the file, or a frozen process: 2 minutes is four missed renewals,
# patient with a loaded machine or a slow disk, yet a crashed remote sweep's run is taken over soon.
LEASE_S = 120.0
RENEW_S = 30.0


class ClaimStatus(StrEnum):
    """What trying to claim a key found (ResultStore.claim)."""

    STORED = "stored"  # already computed: nothing to claim
    BUSY = "busy"  # another owner's claim is live
    CLAIMED = "claimed"  # ours now (new, renewed, or taken over from a dead or silent owner)


def _host() -> str:
    import socket

    return socket.gethostname()


def _process_start(pid: int) -> float | None:
    """When a process started (seconds since the epoch), to tell a live owner from a reused pid."""
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:  # psutil missing, no such process, or not allowed to look
        return None


@dataclass(frozen=True)
class ClaimOwner:
    """Who holds claims: one per run_plan call (token), in process `pid` on `host`, started at `proc_start`."""

    token: str
    pid: int
    host: str
    proc_start: float | None = None

    @classmethod
    def here(cls) -> "ClaimOwner":
        """A new owner for this process."""
        import uuid

        return cls(uuid.uuid4().hex, os.getpid(), _host(), _process_start(os.getpid()))

    def describe(self) -> str:
        """'process 1234' (with the host when it is another machine)."""
        return f"process {self.pid}" + ("" if self.host == _host() else f" on {self.host}")


@dataclass(frozen=True)
class Claim:
    """A run (or baseline, or sensitivity scan) being computed: its key, owner and lease expiry (epoch s)."""

    key: str
    owner: ClaimOwner
    expires: float
    claimed: float


def owner_alive(owner: ClaimOwner) -> bool:
    """False when the owner is known dead: same host and its pid is gone, a zombie, or a newer process."""
    if owner.host != _host():
        return True  # cannot look at another machine's processes: the lease decides
    try:
        import psutil
    except ImportError:
        try:
            os.kill(owner.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    try:
        proc = psutil.Process(owner.pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        if owner.proc_start is not None and abs(proc.create_time() - owner.proc_start) > 1.0:
            return False  # the pid now belongs to another process
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True
    return True


def claim_is_live(claim: Claim, now: float | None = None) -> bool:
    """True while the claim's lease runs and its owner is not known dead."""
    now = time.time() if now is None else now
    return claim.expires > now and owner_alive(claim.owner)


def _claim_of(row: sqlite3.Row) -> Claim:
    return Claim(row["key"], ClaimOwner(row["owner"], row["pid"], row["host"], row["proc_start"]), row["expires"],
                 row["claimed"])
