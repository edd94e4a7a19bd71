"""Every byte count and duration the studio shows, formatted in one place.

Sizes are binary (KiB, MiB, GiB: what `nvidia-smi`, torch and the VRAM estimate count in), with one
exception: free disk space is given in decimal units (KB, MB, GB), the units disk makers and most file
managers use, so the number matches what the user sees when they go to free space.
"""

from __future__ import annotations

KIB = 1024
MIB = 1024**2
GIB = 1024**3

UNKNOWN = "—"

_BINARY = ("B", "KiB", "MiB", "GiB", "TiB")
_DECIMAL = ("bytes", "KB", "MB", "GB", "TB")


def format_bytes(count: float | None, *, style: str = "size") -> str:
    """A byte count for people; `UNKNOWN` for None.

    Styles:
    - "size" (files, folders, downloads): '512 B', '4.0 KiB', '3.0 MiB', '7.9 GiB';
    - "disk" (free disk space, decimal): '512 bytes', '52.4 MB', '3.1 GB';
    - "memory" (GPU and process memory, where a MiB is the smallest unit that matters): '512 MiB', '7.9 GiB';
    - "estimate" (the VRAM breakdown, two decimals so its lines add up): '< 1 MiB', '680 MiB', '8.00 GiB'.
    """
    if count is None:
        return UNKNOWN
    if style == "memory":
        return f"{count / GIB:.1f} GiB" if abs(count) >= GIB else f"{count / MIB:.0f} MiB"
    if style == "estimate":
        if abs(count) >= GIB:
            return f"{count / GIB:.2f} GiB"
        if 0 < abs(count) < MIB:
            return "< 1 MiB"
        return f"{count / MIB:.0f} MiB"
    if style not in ("size", "disk"):
        raise ValueError(f"unknown byte style {style!r}")
    units, step = (_DECIMAL, 1000) if style == "disk" else (_BINARY, 1024)
    for unit in units:
        if abs(count) < step or unit == units[-1]:
            return f"{count:.0f} {unit}" if unit == units[0] else f"{count:.1f} {unit}"
        count /= step
    raise AssertionError("unreachable")


def format_duration(seconds: float | None) -> str:
    """'0:42', '12:05' or '1:02:05' (a minus sign before a negative span, as an axis may need); '—' unknown."""
    if seconds is None:
        return UNKNOWN
    whole = int(round(seconds))
    sign = "-" if whole < 0 else ""
    hours, rest = divmod(abs(whole), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{sign}{hours}:{minutes:02d}:{secs:02d}" if hours else f"{sign}{minutes}:{secs:02d}"
