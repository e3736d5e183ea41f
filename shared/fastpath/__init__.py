"""Fast paths through aiormq for the hot loops of the edge and the dispatcher.

aiormq is built for one message at a time: ``basic_publish`` takes the channel
lock, writes one message and waits for the socket to drain, and a consumer
gets a task of its own for every delivered message. At tens of thousands of
messages per second those costs are most of the work, so each mechanism here
replaces one of them:

- ``marshal``: publish frames built by hand (no aiormq internal).
- ``outbox``: publishes queued for the writer without waiting
  (``Channel.write_queue``, ``aiormq.abc.ChannelFrame``).
- ``confirms``: a batch's confirms counted by delivery tag
  (``Channel._on_confirm_frame``, ``Channel.delivery_tag``).
- ``inline``: deliveries handed on from the connection's reader, no task
  (``Channel.frames``).
- ``receiver``: delivery frames decoded by hand
  (``aiormq.connection.FrameReceiver``).

And one through uvicorn, for the edge's connections:

- ``guard``: deadlines on every connection that is not a stream, and a bound
  on how many are open (uvicorn's ``HttpToolsProtocol`` subclassed).

aiormq is pinned to ``PINNED`` and uvicorn to ``UVICORN_PINNED`` in
pyproject.toml; ``tests/unit/fastpath/test_internals.py`` fails loudly when an
upgrade moves one of these attributes. The only process-wide patch, ``receiver.install``,
is applied explicitly at start by the entry points (the CLI, and tests that
want it); nothing installs it as a side effect of constructing an object.
"""

from __future__ import annotations

PINNED = ">=7.2.4,<7.3"
UVICORN_PINNED = ">=0.54,<0.56"  # 0.54 (the image's lock) and 0.55 checked
