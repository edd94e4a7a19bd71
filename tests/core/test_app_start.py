"""Starting the window where Qt cannot open one: one line saying what to install, exit status 2, never Qt's
abort (status 134). The check imports no Qt, so it is tested here without a display."""

from __future__ import annotations

import os
import subprocess
import sys

from studio.ui.display_check import SYSTEM_PACKAGES, display_problem, missing_libraries, needed_libraries

# Libraries every Linux system that runs Python has (the C and C++ runtimes).
_ALWAYS_THERE = {"libc.so.6", "libm.so.6", "libstdc++.so.6", "libgcc_s.so.1", "ld-linux-x86-64.so.2",
                 "ld-linux-aarch64.so.1", "libdl.so.2", "libpthread.so.0", "librt.so.1"}
_ABSENT = {"libxcb-icccm.so.4", "libxcb-keysyms.so.1"}  # what the machine in issue 12 lacked


def _without(absent):
    return lambda platform: missing_libraries(platform, loads=lambda name: name not in absent)


def test_every_system_library_the_installed_qt_plugins_link_is_named_with_its_packages():
    for platform in ("xcb", "wayland"):
        linked = set(missing_libraries(platform, loads=lambda name: False))  # every system library, none loading
        assert linked - _ALWAYS_THERE <= set(SYSTEM_PACKAGES), (platform, sorted(linked - set(SYSTEM_PACKAGES)))
    xcb = set(missing_libraries("xcb", loads=lambda name: False))
    assert {"libxcb-icccm.so.4", "libxcb-keysyms.so.1", "libxcb-cursor.so.0", "libEGL.so.1"} <= xcb


def test_the_elf_reader_reads_nothing_from_a_file_that_is_not_a_library(tmp_path):
    (tmp_path / "libfake.so").write_bytes(b"\x7fELF" + b"\0" * 60)  # an ELF header and nothing else
    assert needed_libraries(tmp_path / "libfake.so") == [] and needed_libraries(__file__) == []
    assert needed_libraries(tmp_path / "missing.so") == []


def test_missing_xcb_libraries_are_named_with_the_apt_and_dnf_packages():
    problem = display_problem({"DISPLAY": ":0"}, platform="linux", missing=_without(_ABSENT))
    assert problem == ("Qt cannot open a window: missing system libraries libxcb-icccm.so.4, libxcb-keysyms.so.1 "
                       "(for its xcb platform plugin) — install them with: sudo apt install libxcb-icccm4 "
                       "libxcb-keysyms1 (Debian/Ubuntu) or sudo dnf install xcb-util-wm xcb-util-keysyms (Fedora)")
    assert display_problem({"DISPLAY": ":0"}, platform="linux", missing=_without(set())) is None


def test_no_display_is_one_clear_line_and_other_platforms_are_left_alone():
    assert "there is no display (DISPLAY is not set)" in display_problem({}, platform="linux")
    both = display_problem({"QT_QPA_PLATFORM": "wayland;xcb"}, platform="linux")
    assert "neither WAYLAND_DISPLAY nor DISPLAY is set" in both
    for environ in ({"QT_QPA_PLATFORM": "offscreen"}, {"QT_QPA_PLATFORM": "vnc:size=800x600"}):
        assert display_problem(environ, platform="linux", missing=_without(_ABSENT)) is None, environ
    assert display_problem({}, platform="win32") is None and display_problem({}, platform="darwin") is None


def test_a_wayland_session_with_its_libraries_does_not_need_the_xcb_ones():
    session = {"XDG_SESSION_TYPE": "wayland", "WAYLAND_DISPLAY": "wayland-0", "DISPLAY": ":0"}
    assert display_problem(session, platform="linux", missing=_without(_ABSENT)) is None
    only_x = {"QT_QPA_PLATFORM": "xcb", "WAYLAND_DISPLAY": "wayland-0", "DISPLAY": ":0"}
    assert "libxcb-icccm4" in display_problem(only_x, platform="linux", missing=_without(_ABSENT))


def _start_studio(code: str, **environ: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM",
                                                              "XDG_SESSION_TYPE")}
    return subprocess.run([sys.executable, "-c", code], env={**env, **environ}, capture_output=True, text=True,
                          timeout=120)


def test_the_start_command_without_a_display_prints_one_line_and_exits_2_instead_of_aborting():
    result = _start_studio("import sys; from studio.cli import main; sys.exit(main([]))")
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])  # Qt's abort was -6 (134)
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(
        "finetune-studio: Qt cannot open a window: there is no display (DISPLAY is not set)")


def test_the_start_command_with_xcb_libraries_missing_names_them_and_exits_2():
    # The dynamic loader is made to miss the two libraries (on a machine that has them, Qt would open a window).
    code = ("import sys; import studio.ui.display_check as check\n"
            f"check._loads = lambda name, real=check._loads: name not in {sorted(_ABSENT)!r} and real(name)\n"
            "from studio.cli import main; sys.exit(main([]))")
    result = _start_studio(code, DISPLAY=":99")
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert result.stderr.count("\n") == 1
    assert "sudo apt install libxcb-icccm4 libxcb-keysyms1" in result.stderr


def test_the_readme_names_every_package_the_xcb_plugin_needs():
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    commands = {tool: " ".join(re.findall(rf"sudo {tool} install ((?:[^\n]*\\\n)*[^\n]*)", readme))
                for tool in ("apt", "dnf")}
    named = {tool: set(text.replace("\\", " ").split()) for tool, text in commands.items()}
    linked = [name for name in missing_libraries("xcb", loads=lambda name: False) if name in SYSTEM_PACKAGES]
    assert len(linked) > 20
    assert {SYSTEM_PACKAGES[name][0] for name in linked} == named["apt"]
    assert {SYSTEM_PACKAGES[name][1] for name in linked} == named["dnf"]
