"""One headless chromium for the browser tests (tests/browser/cdp.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.browser.cdp import Browser, find_chromium, launch

CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium not installed (apt-get install chromium; scripts/bootstrap --for-tests)",
)


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    assert CHROMIUM is not None
    async with launch(CHROMIUM) as b:
        yield b
