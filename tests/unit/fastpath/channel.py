"""A stand-in for the aiormq channel attributes ssehub.fastpath uses (the same
names tests/unit/fastpath/test_internals.py checks aiormq still has)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiormq.abc import ChannelFrame


class FakeChannel:
    def __init__(
        self, *, delivery_tag: int = 0, confirms: bool = True, queue_size: int = 0
    ) -> None:
        self.publisher_confirms = confirms
        self.delivery_tag = delivery_tag
        self.number = 3
        self.max_content_size = 10
        self.write_queue: asyncio.Queue[ChannelFrame] = asyncio.Queue(maxsize=queue_size)
        self.closing: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.confirm_frames: list[Any] = []

    async def _on_confirm_frame(self, frame: Any) -> None:  # aiormq's own, replaced
        self.confirm_frames.append(frame)

    @property
    def is_closed(self) -> bool:
        return self.closing.done()

    def close(self) -> None:
        self.closing.set_result(None)

    def written(self) -> list[bytes]:
        out = []
        while not self.write_queue.empty():
            frame = self.write_queue.get_nowait()
            assert frame.should_close is False
            out.append(frame.payload)
        return out
