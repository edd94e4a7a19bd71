"""What the libraries print on their own: the one known warning silenced (nothing else), no weight-loading bars."""

from __future__ import annotations

import subprocess
import sys


def _bars_after_hiding(import_transformers_first: bool) -> str:
    code = (("import transformers.utils.logging\n" if import_transformers_first else "")
            + "from studio.core.system.library_output import hide_weight_loading_bars\n"
            "hide_weight_loading_bars()\n"
            "import huggingface_hub.utils as hub\n"
            "from transformers.utils import logging\n"
            "print(logging.is_progress_bar_enabled(), hub.are_progress_bars_disabled('huggingface_hub.http_get'))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_weight_loading_bars_are_hidden_and_download_bars_kept_whenever_transformers_is_imported():
    # A fresh interpreter each: the settings are process-wide.
    assert _bars_after_hiding(import_transformers_first=False) == "False False"
    assert _bars_after_hiding(import_transformers_first=True) == "False False"


def _bitsandbytes_import_log(*, silenced: bool) -> str:
    """What importing bitsandbytes logs in a fresh interpreter (it decides about the Hub kernel on import), with or
    without the studio's filter, plus one other warning from the same logger that the filter must let through."""
    code = ("import logging\n"
            + ("from studio.core.system.library_output import silence_known_library_warnings\n"
               "silence_known_library_warnings()\n" if silenced else "")
            + "import bitsandbytes.functional as F\n"
            "print('avx512bf16', bool(F.has_avx512bf16()))\n"
            "logging.getLogger('bitsandbytes.backends.cpu.ops').warning('another warning')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def test_the_hub_kernel_fallback_line_of_bitsandbytes_is_not_shown_and_nothing_else_is_hidden():
    raw = _bitsandbytes_import_log(silenced=False)
    # bitsandbytes asks for the Hub kernel only on a CPU with AVX512-BF16. If this fails on such a CPU, it no
    # longer logs the line: remove the filter in library_output.
    assert ("Failed to load CPU gemm_4bit_forward from kernels-community" in raw) == ("avx512bf16 True" in raw), raw

    silenced = _bitsandbytes_import_log(silenced=True)
    assert "gemm_4bit_forward" not in silenced and "kernels-community" not in silenced, silenced
    assert "another warning" in silenced
