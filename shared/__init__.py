"""ssehub: Server-Sent Events from any backend to browsers, on RabbitMQ.

The public API for backends::

    from ssehub import Publisher, InvalidMessage

Everything else (``ssehub.edge``, ``ssehub.dispatcher``, the modules of this
package) is the service itself; see docs/architecture.md.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from ssehub.errors import InvalidMessage, PublishError, SsehubError
from ssehub.publisher import Publisher

try:
    __version__ = version("ssehub")
except PackageNotFoundError:  # pragma: no cover - running from an unbuilt tree
    __version__ = "0+unknown"

__all__ = ["InvalidMessage", "PublishError", "Publisher", "SsehubError", "__version__"]
