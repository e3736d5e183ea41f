"""ssehub.edge.handles: the bound on connections an edge serves within its file handles."""

from __future__ import annotations

import resource

import pytest
from ssehub.edge.handles import OVERHEAD, Budget, budget, raise_soft_limit
from ssehub.errors import ConfigError


def test_the_overhead_is_the_documented_256() -> None:
    assert OVERHEAD == 256  # docs/architecture.md, k8s/README.md and docker-compose.yml say so


@pytest.mark.parametrize(
    ("wanted", "soft", "bound", "lowered"),
    [
        (None, 65_536, 65_280, None),  # not set: what the limit leaves room for
        (30_000, 65_536, 30_000, None),  # set and fits
        (30_256 - 256, 30_256, 30_000, None),  # exactly fits
        (30_000, 20_000, 19_744, 30_000),  # set, too many: lowered, and said so
        (None, 1_024, 768, None),  # a small default limit
    ],
)
def test_the_bound_fits_the_limit(
    wanted: int | None, soft: int, bound: int, lowered: int | None
) -> None:
    got = budget(wanted, (soft, soft))
    assert got == Budget(soft, soft, bound, lowered)
    assert got.max_connections + OVERHEAD <= soft
    assert f"at most {bound} connections" in got.describe()


@pytest.mark.parametrize("soft", [1, 200, OVERHEAD])
def test_a_limit_with_no_room_stops_the_edge_with_one_line(soft: int) -> None:
    with pytest.raises(ConfigError) as info:
        budget(None, (soft, soft))
    assert str(info.value).startswith(f"RLIMIT_NOFILE: {soft} file handles are too few")
    assert "\n" not in str(info.value)


def test_the_soft_limit_is_raised_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 512), hard))
        got = raise_soft_limit()
        assert got is not None
        assert got[0] == got[1] == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        assert hard == resource.RLIM_INFINITY or got[1] == hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
