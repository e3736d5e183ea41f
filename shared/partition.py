"""Which dispatch partition a user, or a conversation, belongs to.

``partition_of(id, n)`` is CRC-32 (IEEE 802.3, the one of zlib, Node's
``zlib.crc32`` and every language's standard library) of the id's UTF-8
bytes, modulo the deployment's partition count ``SSEHUB_PARTITIONS``. Stable
across processes, versions and languages: a publisher may compute it too.
Users and conversations each hash their own id: ``user.X`` and ``control.X``
land in X's partition, ``conversation.C`` and ``members.C`` in C's.
"""

from __future__ import annotations

from zlib import crc32


def partition_of(key: str, partitions: int) -> int:
    if partitions == 1:
        return 0
    return crc32(key.encode()) % partitions
