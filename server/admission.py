"""Admission control: how many streams the server holds open, and for whom (no gRPC here).

A stream costs memory (gRPC's buffers, up to one chunk, and the spooled payload) for as
long as it is open, so the number of open streams, not the number of clients, bounds the
server's memory.  :class:`Admission` enforces:

* **one upload per client at a time** — a second upload of a client whose upload is in
  progress (or waiting) is refused at once (:class:`~fedcodec.server.errors.BusyError`,
  RESOURCE_EXHAUSTED "… retry later");
* **at most** ``max_uploads`` **uploads receiving at once**; up to ``max_waiting_uploads``
  more wait (first come, first served, at most ``wait_s``) for a slot, further ones are
  refused at once.  With one slot per client this is a fair share: a client cannot hold
  more than one of the slots, however many streams it opens;
* **at most** ``large_payloads`` **payloads above one chunk in memory at once** (they are
  spooled to a temporary file while they arrive);
* **at most** ``downloads_per_client`` **and** ``max_downloads`` **downloads at once**.

Memory: ``O(model × (decodes + large_payloads) + chunk × (uploads + waiting + downloads))``;
the numbers are in ``server/README.md``.  Refusals are cheap (nothing is read) and
retryable: the edge SDK resends with backoff and jitter.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fedcodec.server.errors import RETRY_MARK, BusyError

__all__ = ["Admission", "AdmissionLimits"]


@dataclass(frozen=True)
class AdmissionLimits:
    """The limits of :class:`Admission` (from ``[limits]`` of the configuration).

    Attributes
    ----------
    max_uploads : int
        Uploads receiving at once.
    max_waiting_uploads : int
        Uploads waiting for a slot at once.
    wait_s : float
        Longest wait for an upload slot.
    large_payloads : int
        Payloads larger than one chunk held in memory at once.
    max_downloads : int
        Downloads at once.
    downloads_per_client : int
        Downloads of one client at once.
    """

    max_uploads: int = 256
    max_waiting_uploads: int = 1024
    wait_s: float = 5.0
    large_payloads: int = 4
    max_downloads: int = 256
    downloads_per_client: int = 2


class Admission:
    """Admission of upload and download streams (call from one event loop).

    Parameters
    ----------
    limits : AdmissionLimits
        The limits.
    """

    def __init__(self, limits: AdmissionLimits) -> None:
        self.limits = limits
        self._upload_slots = asyncio.Semaphore(limits.max_uploads)
        self._large = asyncio.Semaphore(limits.large_payloads)
        self._uploading: set[str] = set()
        self._receiving = 0
        self._waiting = 0
        self._downloads: dict[str, int] = {}
        self._download_total = 0

    @property
    def uploads(self) -> int:
        """Uploads receiving now."""
        return self._receiving

    @property
    def waiting(self) -> int:
        """Uploads waiting for a slot now."""
        return self._waiting

    @property
    def downloads(self) -> int:
        """Downloads running now."""
        return self._download_total

    @asynccontextmanager
    async def upload(self, client_id: str) -> AsyncIterator[None]:
        """Hold an upload slot for ``client_id`` (refused: :class:`BusyError`)."""
        if client_id in self._uploading:
            raise BusyError(
                f"an upload of {client_id!r} is already in progress (one at a time per "
                f"client); {RETRY_MARK}"
            )
        if self._upload_slots.locked() and self._waiting >= self.limits.max_waiting_uploads:
            raise BusyError(
                f"the server is receiving {self.limits.max_uploads} uploads and "
                f"{self._waiting} more wait; {RETRY_MARK}"
            )
        self._uploading.add(client_id)
        try:
            self._waiting += 1
            try:
                async with asyncio.timeout(self.limits.wait_s):
                    await self._upload_slots.acquire()
            except TimeoutError:
                raise BusyError(
                    f"no upload slot within {self.limits.wait_s:g} s (the server is receiving "
                    f"{self.limits.max_uploads} uploads); {RETRY_MARK}"
                ) from None
            finally:
                self._waiting -= 1
            self._receiving += 1
            try:
                yield
            finally:
                self._receiving -= 1
                self._upload_slots.release()
        finally:
            self._uploading.discard(client_id)

    @asynccontextmanager
    async def large_payload(self) -> AsyncIterator[None]:
        """Hold one of the slots for a payload above one chunk in memory (waits)."""
        async with self._large:
            yield

    @asynccontextmanager
    async def download(self, client_id: str) -> AsyncIterator[None]:
        """Hold a download slot for ``client_id`` (refused: :class:`BusyError`)."""
        mine = self._downloads.get(client_id, 0)
        if mine >= self.limits.downloads_per_client:
            raise BusyError(f"{client_id!r} already has {mine} downloads running; {RETRY_MARK}")
        if self.downloads >= self.limits.max_downloads:
            raise BusyError(
                f"the server is sending {self.limits.max_downloads} downloads; {RETRY_MARK}"
            )
        self._downloads[client_id] = mine + 1
        self._download_total += 1
        try:
            yield
        finally:
            self._download_total -= 1
            left = self._downloads[client_id] - 1
            if left:
                self._downloads[client_id] = left
            else:
                del self._downloads[client_id]
