"""The one place byte counts and durations become text (studio.core.system.units)."""

from __future__ import annotations

import pytest

from studio.core.system.units import GIB, MIB, format_bytes, format_duration


def test_memory_style_is_whole_mib_below_a_gib():  # GPU and process memory (the GPU panel, the card's name)
    assert format_bytes(None, style="memory") == "—"
    assert format_bytes(512 * MIB, style="memory") == "512 MiB"
    assert format_bytes(8 * GIB, style="memory") == "8.0 GiB"
    assert format_bytes(int(7.86 * GIB), style="memory") == "7.9 GiB"


def test_size_style_steps_through_binary_units():  # files, folders, adapters in the Runs view
    assert format_bytes(None) == "—" and format_bytes(512) == "512 B" and format_bytes(3 * 1024**2) == "3.0 MiB"
    assert format_bytes(4096) == "4.0 KiB" and format_bytes(5 * 1024**4) == "5.0 TiB"


def test_disk_style_is_decimal_as_disk_space_is_sold():
    assert format_bytes(52_400_000, style="disk") == "52.4 MB"
    assert format_bytes(999, style="disk") == "999 bytes" and format_bytes(3.1e9, style="disk") == "3.1 GB"


def test_estimate_style_has_two_decimals_and_no_zero_for_a_small_term():
    assert format_bytes(8 * GIB, style="estimate") == "8.00 GiB"
    assert format_bytes(680 * MIB, style="estimate") == "680 MiB"
    assert format_bytes(10_000, style="estimate") == "< 1 MiB" and format_bytes(0, style="estimate") == "0 MiB"


def test_an_unknown_style_is_refused():
    with pytest.raises(ValueError, match="unknown byte style"):
        format_bytes(1, style="metric")


def test_durations():
    assert format_duration(None) == "—" and format_duration(42) == "0:42" and format_duration(3725) == "1:02:05"
    assert format_duration(75) == "1:15" and format_duration(-5) == "-0:05"
