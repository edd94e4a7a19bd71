"""Which torch build fits a machine, and which NVIDIA driver a torch's CUDA needs: one rule for install.sh, which
runs this file with the system Python before anything is installed (so it imports only the standard library), and
for `finetune-studio doctor`, which names the same install command as its fix.

The driver minimums are NVIDIA's minor-version compatibility table ("CUDA Toolkit 11.x, 12.x, and 13.x Minimum
Required Driver Versions", https://docs.nvidia.com/deploy/cuda-compatibility/minor-version-compatibility.html,
with the exact per-OS versions from the CUDA Toolkit release notes, Table 2): an application built with any 12.x
toolkit (torch's cu126, cu128 wheels) runs on a driver >= 525.60.13 on Linux, >= 528.33 on Windows; 13.x needs
>= 580 on both; 11.x needs >= 450.80.02 / 452.39.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

__all__ = ["CUDA_WHEEL", "TorchBuild", "choose_torch", "driver_needed", "driver_satisfies", "install_command"]

PYTORCH_INDEX = "https://download.pytorch.org/whl"
#: The CUDA build install.sh chooses where a driver is present: 12.8 runs on every driver since 525.60.13 (Linux)
#: and on every card from Maxwell to Blackwell (sm_120), where cu130 would need driver 580 and drop pre-Turing cards.
CUDA_WHEEL = "cu128"

# CUDA major version -> (Linux minimum, Windows minimum), NVIDIA's minor-version compatibility table (see above).
_MINIMUM_DRIVER: dict[int, tuple[str, str]] = {
    11: ("450.80.02", "452.39"),
    12: ("525.60.13", "528.33"),
    13: ("580", "580"),
}


def _version_key(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.strip().split(".") if part.isdigit())


def driver_needed(cuda_version: str, os_name: str) -> str | None:
    """The oldest NVIDIA driver that runs a torch built with `cuda_version` ("12.8") on `os_name`; None if unknown."""
    major = _version_key(cuda_version)[:1]
    if not major or major[0] not in _MINIMUM_DRIVER:
        return None
    linux, windows = _MINIMUM_DRIVER[major[0]]
    return windows if os_name == "windows" else linux


def driver_satisfies(driver: str, cuda_version: str, os_name: str) -> bool:
    """True when `driver` ("550.54.14") runs a torch built with `cuda_version`; an unknown CUDA passes."""
    needed = driver_needed(cuda_version, os_name)
    return needed is None or _version_key(driver) >= _version_key(needed)


@dataclass(frozen=True)
class TorchBuild:
    """A torch build: `local` the wheel's version tag (cpu, cu128; "" for PyPI's own wheels), `index` the wheel index
    (None: PyPI), `why` one sentence for the user, `supported` False where the studio cannot train."""

    local: str
    index: str | None
    why: str
    supported: bool = True

    def requirement(self, version: str) -> str:
        return f"torch=={version}+{self.local}" if self.local else f"torch=={version}"


def choose_torch(os_name: str, machine: str, driver: str | None) -> TorchBuild:
    """The torch build for a machine: `os_name` linux/windows/darwin, `machine` as platform.machine() says,
    `driver` the NVIDIA driver version (None without one)."""
    machine = machine.lower()
    if os_name == "darwin":
        if machine in ("arm64", "aarch64"):
            return TorchBuild("", None, "Apple silicon: PyPI's torch (Metal, MPS); the studio trains there in 16-bit "
                                        "LoRA, without 4-bit QLoRA (bitsandbytes has no Metal kernels)")
        return TorchBuild("", None, "an Intel Mac: torch publishes no wheels for it after 2.2, so the studio cannot "
                                    "train here", supported=False)
    if driver:
        needed = driver_needed("12.8", os_name) or ""
        if driver_satisfies(driver, "12.8", os_name):
            return TorchBuild(CUDA_WHEEL, f"{PYTORCH_INDEX}/{CUDA_WHEEL}",
                              f"NVIDIA driver {driver}: the CUDA 12.8 build")
        return TorchBuild("cpu", f"{PYTORCH_INDEX}/cpu",
                          f"NVIDIA driver {driver} is older than {needed}, the oldest that runs torch's CUDA 12 "
                          f"builds: the CPU build until the driver is updated to {needed} or newer")
    return TorchBuild("cpu", f"{PYTORCH_INDEX}/cpu", "no NVIDIA driver: the CPU build")


def install_command(build: TorchBuild, version: str, *, python: str = "python") -> str:
    """The one command that puts `build` of torch `version` into the environment `python` runs in. PyTorch's index is
    an extra one: the pin on the wheel's tag (+cu128, +cpu) selects the build, which only that index has, and torch's
    dependencies come from PyPI like every other package's."""
    index = f" --extra-index-url {build.index}" if build.index else ""
    return f'{python} -m pip install --force-reinstall "{build.requirement(version)}"{index}'


def main(argv: list[str] | None = None) -> int:
    """install.sh's question: prints `local`, `index` (or -) and `why`, one a line."""
    parser = argparse.ArgumentParser(description="the torch build for this machine (install.sh runs this)")
    parser.add_argument("--os", required=True, choices=("linux", "windows", "darwin"))
    parser.add_argument("--machine", required=True)
    parser.add_argument("--driver", default="", help="the NVIDIA driver version, empty without one")
    args = parser.parse_args(argv)
    build = choose_torch(args.os, args.machine, args.driver or None)
    print(build.local or "-", build.index or "-", build.why, sep="\n")
    return 0 if build.supported else 2


if __name__ == "__main__":
    sys.exit(main())
