"""Can Qt open a window here? Asked before Qt is imported, because when it cannot, Qt aborts the process.

On Linux, Qt's xcb (X11) and wayland platform plugins link system libraries that PySide6's wheel does not
ship. When one is missing, or there is no display at all, creating the QApplication ends in `qFatal` — an
abort (exit status 134) after a message that names at most one library ("xcb-cursor0 … is needed" even when
that one is present and two others are not). This module finds every missing library the way the plugin
would (its ELF `DT_NEEDED` entries, loaded through the same dynamic loader) and says which packages to
install. It imports no Qt, so it can run first.
"""

from __future__ import annotations

import ctypes
import importlib.util
import mmap
import os
import struct
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

__all__ = ["DISPLAY_EXIT_STATUS", "SYSTEM_PACKAGES", "display_problem", "missing_libraries"]

DISPLAY_EXIT_STATUS = 2  # the studio's "bad input" status: the machine's set-up, not a crash

# soname -> (Debian/Ubuntu package, Fedora package), for what PySide6 6.11's xcb and wayland plugins, QtGui and
# QtWidgets link (read with `objdump -p` from the wheel's libqxcb.so, libQt6XcbQpa.so.6, libqwayland.so,
# libQt6Gui.so.6 …; tests/core/test_app_start.py checks that every one of them is named here).
SYSTEM_PACKAGES: dict[str, tuple[str, str]] = {
    "libxcb-cursor.so.0": ("libxcb-cursor0", "xcb-util-cursor"),
    "libxcb-icccm.so.4": ("libxcb-icccm4", "xcb-util-wm"),
    "libxcb-keysyms.so.1": ("libxcb-keysyms1", "xcb-util-keysyms"),
    "libxcb-image.so.0": ("libxcb-image0", "xcb-util-image"),
    "libxcb-render-util.so.0": ("libxcb-render-util0", "xcb-util-renderutil"),
    "libxcb-util.so.1": ("libxcb-util1", "xcb-util"),
    "libxcb-randr.so.0": ("libxcb-randr0", "libxcb"),
    "libxcb-render.so.0": ("libxcb-render0", "libxcb"),
    "libxcb-shape.so.0": ("libxcb-shape0", "libxcb"),
    "libxcb-shm.so.0": ("libxcb-shm0", "libxcb"),
    "libxcb-sync.so.1": ("libxcb-sync1", "libxcb"),
    "libxcb-xfixes.so.0": ("libxcb-xfixes0", "libxcb"),
    "libxcb-xkb.so.1": ("libxcb-xkb1", "libxcb"),
    "libxcb.so.1": ("libxcb1", "libxcb"),
    "libX11-xcb.so.1": ("libx11-xcb1", "libX11-xcb"),
    "libX11.so.6": ("libx11-6", "libX11"),
    "libxkbcommon.so.0": ("libxkbcommon0", "libxkbcommon"),
    "libxkbcommon-x11.so.0": ("libxkbcommon-x11-0", "libxkbcommon-x11"),
    "libwayland-client.so.0": ("libwayland-client0", "libwayland-client"),
    "libwayland-cursor.so.0": ("libwayland-cursor0", "libwayland-cursor"),
    "libwayland-egl.so.1": ("libwayland-egl1", "libwayland-egl"),
    "libGL.so.1": ("libgl1", "libglvnd-glx"),
    "libEGL.so.1": ("libegl1", "libglvnd-egl"),
    "libOpenGL.so.0": ("libopengl0", "libglvnd-opengl"),
    "libfontconfig.so.1": ("libfontconfig1", "fontconfig"),
    "libfreetype.so.6": ("libfreetype6", "freetype"),
    "libglib-2.0.so.0": ("libglib2.0-0", "glib2"),
    "libgthread-2.0.so.0": ("libglib2.0-0", "glib2"),
    "libdbus-1.so.3": ("libdbus-1-3", "dbus-libs"),
    "libz.so.1": ("zlib1g", "zlib"),
    "libzstd.so.1": ("libzstd1", "libzstd"),
}

_PT_LOAD, _PT_DYNAMIC, _DT_NULL, _DT_NEEDED, _DT_STRTAB = 1, 2, 0, 1, 5


def needed_libraries(path: Path) -> list[str]:
    """The `DT_NEEDED` entries of a 64-bit little-endian ELF file; [] for anything else or anything unreadable."""
    try:
        with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
                return []
            phoff, = struct.unpack_from("<Q", data, 0x20)
            phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
            loads, dynamic = [], None
            for index in range(phnum):
                kind, _, offset, vaddr, _, filesz = struct.unpack_from("<IIQQQQ", data, phoff + index * phentsize)
                if kind == _PT_LOAD:
                    loads.append((vaddr, offset, filesz))
                elif kind == _PT_DYNAMIC:
                    dynamic = (offset, filesz)
            if dynamic is None:
                return []
            entries = [struct.unpack_from("<qQ", data, dynamic[0] + at) for at in range(0, dynamic[1], 16)]
            strtab = next((value for tag, value in entries if tag == _DT_STRTAB), None)
            base = next((offset + strtab - vaddr for vaddr, offset, size in loads
                         if strtab is not None and vaddr <= strtab < vaddr + size), None)
            if base is None:
                return []
            names = []
            for tag, value in entries:
                if tag == _DT_NULL:
                    break
                if tag == _DT_NEEDED:
                    end = data.find(b"\0", base + value)
                    names.append(data[base + value:end].decode("utf-8", "replace"))
            return names
    except (OSError, ValueError, struct.error):
        return []


def _qt_dir() -> Path | None:
    """The wheel's `PySide6/Qt` folder, found without importing PySide6."""
    try:
        spec = importlib.util.find_spec("PySide6")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    folder = Path(spec.origin).parent / "Qt"
    return folder if folder.is_dir() else None


def _loads(soname: str) -> bool:
    try:
        ctypes.CDLL(soname)  # the dynamic loader's own search, as for the plugin; Qt loads these libraries anyway
        return True
    except OSError:
        return False


def missing_libraries(platform: str, qt_dir: Path | None = None,
                      loads: Callable[[str], bool] | None = None) -> list[str]:
    """System libraries that Qt's `platform` plugin (with QtWidgets) needs and the dynamic loader cannot find.

    Qt's own libraries (found beside each other in the wheel) are followed, not checked."""
    qt_dir = qt_dir if qt_dir is not None else _qt_dir()
    loads = loads or _loads
    if qt_dir is None:
        return []  # not the PySide6 wheel (a distribution's own Qt): nothing to read, Qt's message stands
    plugin = qt_dir / "plugins" / "platforms" / f"libq{platform}.so"
    if not plugin.is_file():
        return []
    lib_dir = qt_dir / "lib"
    pending, seen, missing = [plugin, lib_dir / "libQt6Widgets.so.6"], set(), []
    while pending:
        path = pending.pop(0)
        if path in seen:
            continue
        seen.add(path)
        for name in needed_libraries(path):
            if (lib_dir / name).is_file():
                pending.append(lib_dir / name)
            elif name not in missing and not loads(name):
                missing.append(name)
    return missing


def _platforms(environ: Mapping[str, str]) -> list[str]:
    """The platform plugins Qt will try, in order: QT_QPA_PLATFORM's list, or Qt's default on Linux."""
    requested = environ.get("QT_QPA_PLATFORM", "").strip()
    if requested:
        return [part.split(":", 1)[0].strip() for part in requested.split(";") if part.strip()]
    if environ.get("XDG_SESSION_TYPE") == "wayland" and environ.get("WAYLAND_DISPLAY"):
        return ["wayland", "xcb"]  # Qt 6 prefers wayland in a Wayland session and falls back to X11 (XWayland)
    return ["xcb"]


def _install_line(missing: list[str]) -> str:
    known = [name for name in missing if name in SYSTEM_PACKAGES]
    apt = " ".join(dict.fromkeys(SYSTEM_PACKAGES[name][0] for name in known))
    dnf = " ".join(dict.fromkeys(SYSTEM_PACKAGES[name][1] for name in known))
    line = f"install them with: sudo apt install {apt} (Debian/Ubuntu) or sudo dnf install {dnf} (Fedora)" \
        if known else "install the packages that provide them"
    unknown = [name for name in missing if name not in SYSTEM_PACKAGES]
    if known and unknown:
        line += f", and the packages that provide {', '.join(unknown)}"
    return line


def display_problem(environ: Mapping[str, str] | None = None, platform: str | None = None,
                    missing: Callable[[str], list[str]] | None = None) -> str | None:
    """Why Qt could not open a window here, as one line saying what to do; None when nothing is in the way (or
    when the user chose a platform plugin other than xcb/wayland, e.g. QT_QPA_PLATFORM=offscreen)."""
    environ = os.environ if environ is None else environ
    if not (platform or sys.platform).startswith("linux"):
        return None  # Windows and macOS plugins ship with the wheel
    platforms = _platforms(environ)
    if not platforms or platforms[0] not in ("xcb", "wayland"):
        return None
    displays = {"xcb": "DISPLAY", "wayland": "WAYLAND_DISPLAY"}
    reachable = [p for p in platforms if p in displays and environ.get(displays[p])]
    if not reachable:
        unset = list(dict.fromkeys(displays[p] for p in platforms if p in displays))
        which = f"neither {unset[0]} nor {unset[1]} is set" if len(unset) > 1 else f"{unset[0]} is not set"
        return (f"Qt cannot open a window: there is no display ({which}) — start it in a desktop session (or over "
                "ssh -X), or use the headless commands: finetune-studio --help")
    problems = {p: (missing or missing_libraries)(p) for p in reachable}
    if any(not names for names in problems.values()):
        return None
    platform_name = "xcb" if "xcb" in problems else reachable[0]
    names = problems[platform_name]
    return (f"Qt cannot open a window: missing system libraries {', '.join(names)} (for its {platform_name} "
            f"platform plugin) — {_install_line(names)}")
