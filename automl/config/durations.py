"""Wall-clock durations as people write them: ``6h``, ``90m``, ``1h30m``, ``45s``, ``2d``
or plain seconds (``3600``). One parser for every flag and config key that takes one."""

from __future__ import annotations

import re

_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)([dhms])")


def parse_duration(value: str | float | int, where: str = "duration") -> float:
    """Seconds in ``value``; ValueError naming ``where`` and the accepted forms."""
    if isinstance(value, bool):
        raise ValueError(f"{where}: expected a duration like 6h, 90m or 3600, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = value.strip().lower().replace(" ", "")
        try:
            seconds = float(text)
        except ValueError:
            parts = _PART.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise ValueError(f"{where}: {value!r} is not a duration; write e.g. 6h, 90m, 1h30m, 45s or "
                                 "seconds (3600)") from None
            seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"{where}: a duration must be positive, got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """``5400`` -> ``1h30m``; ``42.5`` -> ``42s``: short, for tables and logs."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            out.append(f"{seconds // size}{unit}")
            seconds %= size
    if seconds and len(out) < 2:
        out.append(f"{seconds}s")
    return "".join(out)
