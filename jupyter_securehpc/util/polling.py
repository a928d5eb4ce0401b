"""Waiting for a condition by polling, with a deadline (for things that offer nothing to wait on)."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(check: Callable[[], object], timeout: float, interval: float = 0.2) -> bool:
    """Poll ``check()`` until it is true or ``timeout`` seconds have passed; whether it became true."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
