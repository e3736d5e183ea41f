"""Answering a crowd of the same kind of request with one query.

When thousands of streams open at once (a reconnect storm), each wants its
user's position and first replay page. One query each means thousands of
round trips (and, for SQLite, thread hops that wait on a busy event loop).
A ``Coalescer`` runs one round at a time: requests made while a round runs
wait for the next one, which answers all of them with a single call of
``fetch``. Under light load a round holds one request and costs what a plain
query would. (The edge's binds use the same rounds: edge/binder.py.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from ssehub.errors import SsehubError

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Coalescer(Generic[K, V]):
    def __init__(self, fetch: Callable[[list[K]], Awaitable[dict[K, V]]], missing: V) -> None:
        """``fetch``: the answers for many keys (a key it leaves out gets ``missing``)."""
        self._fetch = fetch
        self._missing = missing
        self._wanted: dict[K, list[asyncio.Future[V]]] = {}
        self._round: asyncio.Task[None] | None = None

    async def get(self, key: K) -> V:
        """The answer, read after this call was made (callers may rely on that)."""
        answer: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._wanted.setdefault(key, []).append(answer)
        if self._round is None:
            self._round = asyncio.create_task(self._rounds())
        return await answer

    async def _rounds(self) -> None:
        wanted: dict[K, list[asyncio.Future[V]]] = {}
        try:
            while self._wanted:
                wanted, self._wanted = self._wanted, {}
                try:
                    found = await self._fetch(list(wanted))
                except Exception as exc:
                    _fail(wanted, exc)
                    continue
                for key, answers in wanted.items():
                    value = found.get(key, self._missing)
                    for answer in answers:
                        if not answer.done():
                            answer.set_result(value)
        except BaseException:
            # Cancelled (its owner is stopping) or worse: no caller may be left
            # waiting for a round that will never run.
            gone = RoundCancelled("the round was cancelled before it answered")
            _fail(wanted, gone)
            _fail(self._wanted, gone)
            self._wanted = {}
            raise
        finally:
            self._round = None


class RoundCancelled(SsehubError):
    """A coalesced round was cancelled before it answered (its owner stopped)."""


def _fail(wanted: dict[K, list[asyncio.Future[V]]], exc: BaseException) -> None:
    for answers in wanted.values():
        for answer in answers:
            if not answer.done():  # its caller may have gone
                answer.set_exception(exc)
