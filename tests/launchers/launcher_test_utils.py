"""Helpers for the launcher tests (a uniquely named module: test folders have no ``__init__.py``)."""

from __future__ import annotations

import time


def wait_for(predicate, timeout=10.0) -> bool:
    """Poll ``predicate`` every 50 ms until it is true (True) or ``timeout`` s pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False
