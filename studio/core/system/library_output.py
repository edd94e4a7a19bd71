"""What the libraries we use print on their own, trimmed to what a user can act on.

Each filter here names the library and version it is for and why nothing of ours can avoid it;
remove it when the library stops printing the message.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

__all__ = ["hide_weight_loading_bars", "silence_known_library_warnings"]


def silence_known_library_warnings() -> None:
    """Ignore the warnings below (and nothing else); safe to call more than once."""
    # PEFT 0.21.2 (the newest release) reads `model.is_gradient_checkpointing` in `PeftModel.__init__`
    # (peft/peft_model.py:184), a property transformers 5.x deprecated for `is_activation_checkpointing`. Every
    # get_peft_model (TRL's SFTTrainer in training) and PeftModel.from_pretrained (chat, merge, export) passes
    # there, so a clean run printed a FutureWarning addressed to PEFT's developers. The studio never reads the old
    # name; tests/core/system/test_library_output.py fails once PEFT stops warning, so the filter goes with the cause.
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning,
                            module=r"transformers\.modeling_utils")
    # bitsandbytes 0.50 (backends/cpu/ops.py), on a CPU with AVX512-BF16, asks the Hub's `kernels` package for
    # kernels-community's gemm_4bit_forward when it is imported, and logs "Failed to load CPU gemm_4bit_forward
    # from kernels-community: … could not verify publisher trust status … `pip install kernels`" in every
    # process that loads a 4-bit model. The studio never runs Hub code it was not allowed to (that would need
    # trust_remote_code), and there is no setting that skips the attempt: bitsandbytes then uses its own C++
    # kernel, for inference only (training keeps the weights unpacked: trained_base.keep_4bit_weights_unpacked).
    # Installing `kernels` does not help; the line only misled. tests/core/system/test_library_output.py fails once
    # bitsandbytes stops logging it.
    cpu_ops = logging.getLogger("bitsandbytes.backends.cpu.ops")  # the same logger bitsandbytes takes on import
    if _HUB_KERNEL_FALLBACK not in cpu_ops.filters:
        cpu_ops.addFilter(_HUB_KERNEL_FALLBACK)


class _DropMessage(logging.Filter):
    """Drops the log records whose format string starts with `start`; every other record passes."""

    def __init__(self, start: str):
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.start)


_HUB_KERNEL_FALLBACK = _DropMessage("Failed to load CPU gemm_4bit_forward from kernels-community")


def hide_weight_loading_bars() -> None:
    """No tqdm bar while transformers loads weights (`Loading weights: 100%|███| 20/20`): in a terminal it is
    noise between the command's own lines, and in the window's log a line of block characters; the run already
    says "Loading <model>". Hub download bars stay: a model fetched at the start of a run can take many minutes,
    and its bar is the only sign of progress. A user's own HF_HUB_DISABLE_PROGRESS_BARS decides everything."""
    if os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS") is not None:
        return
    import huggingface_hub.utils as hub_utils

    downloads_shown = not hub_utils.are_progress_bars_disabled("huggingface_hub")
    transformers_logging = sys.modules.get("transformers.utils.logging")
    if transformers_logging is not None:
        transformers_logging.disable_progress_bar()  # its own bars, and (as a side effect) the Hub's
    else:
        # Not imported yet (importing it costs half a second, before a bad config could be refused): transformers
        # takes its setting from the Hub's global one when it is imported (`_tqdm_active` in its utils/logging.py).
        hub_utils.disable_progress_bars()
    if downloads_shown:
        hub_utils.enable_progress_bars("huggingface_hub")
