"""The doctor (issue 24): each check with the machine's facts faked at the boundary, the real checks on this CPU
machine, the torch-build rule install.sh shares, the start-up banner's decision and the redacted report."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from studio.cli import main
from studio.core.sessions import doctor as doctor_session
from studio.core.sessions.doctor import DoctorSession, banner_checks, diagnostics_report, examine, needs_for
from studio.core.system import doctor
from studio.core.system.doctor import FAIL, OK, WARN, Disk, Facts, Needs, TorchFacts, run_checks
from studio.core.system.gpu import GpuInfo
from studio.core.system.torch_build import choose_torch, driver_needed, driver_satisfies

GIB = 1024**3
RTX_4060 = GpuInfo(name="NVIDIA GeForce RTX 4060", total_bytes=8 * GIB, free_bytes=7 * GIB, compute_capability=(8, 9))
TESTED = doctor.tested_versions()


def facts(**changes) -> Facts:
    """A sound Linux machine with an RTX 4060 and torch 2.13 for CUDA 12.8; each test changes one fact."""
    base = Facts(os_name="linux", machine="x86_64", cpu="AMD Ryzen 5 7600", gpu=RTX_4060, driver="550.54.14",
                 torch=TorchFacts("2.13.0+cu128", cuda="12.8", cuda_available=True),
                 ram_total_bytes=32 * GIB, ram_available_bytes=24 * GIB,
                 disks=(Disk("the Hugging Face cache", "/home/alice/.cache/huggingface/hub", 200 * GIB),
                        Disk("the runs folder", "/home/alice/.local/share/finetune-studio/runs", 200 * GIB)),
                 bitsandbytes="0.50.2", quantizer="/usr/local/bin/llama-quantize", ollama="/usr/local/bin/ollama",
                 versions=dict(TESTED), tested=dict(TESTED), python="3.11.7")
    return replace(base, **changes)


def check(checks, key):
    return next(c for c in checks if c.key == key)


def test_a_sound_machine_is_ok_everywhere():
    checks = run_checks(facts())
    assert [c.level for c in checks] == [OK] * len(checks), checks
    assert "RTX 4060" in check(checks, "torch").found


@pytest.mark.parametrize("os_name, index", [("windows", "cu128"), ("linux", "cu128")])
def test_an_nvidia_card_with_a_cpu_only_torch_is_a_loud_warning_with_the_install_command(os_name, index):
    checks = run_checks(facts(os_name=os_name, driver="560.94", torch=TorchFacts("2.13.0+cpu")))
    torch = check(checks, "torch")
    assert torch.level == WARN
    assert "RTX 4060" in torch.found and "CPU-only" in torch.found
    assert '"torch==2.13.0+cu128" --extra-index-url https://download.pytorch.org/whl/cu128' in torch.fix
    assert banner_checks(checks) == [torch]  # the banner shows this warning; quieter ones stay in the dialog
    # and the presets must not plan for a card the run will not train on
    report = examine(None, gather=lambda **_: facts(os_name=os_name, torch=TorchFacts("2.13.0+cpu")))
    assert report.training_gpu is None and examine(None, gather=lambda **_: facts()).training_gpu == RTX_4060


def test_without_a_driver_the_fix_for_a_cpu_torch_under_a_seen_card_stays_the_cpu_build():
    # NVML sees the card but reports no driver version (nvidia-smi missing too): nothing to choose CUDA by.
    torch = check(run_checks(facts(driver=None, torch=TorchFacts("2.13.0+cpu"))), "torch")
    assert torch.level == WARN and "whl/cpu" in torch.fix


@pytest.mark.parametrize("os_name, driver, needed", [("linux", "520.61.05", "525.60.13"),
                                                     ("windows", "527.56", "528.33")])
def test_a_driver_older_than_torchs_cuda_fails_naming_the_driver_needed(os_name, driver, needed):
    torch = check(run_checks(facts(os_name=os_name, driver=driver)), "torch")
    assert torch.level == FAIL
    assert f"needs NVIDIA driver {needed} or newer; this machine has {driver}" in torch.found
    assert f"update the NVIDIA driver to {needed}" in torch.fix


def test_cuda_13_needs_driver_580():
    torch = check(run_checks(facts(torch=TorchFacts("2.13.0+cu130", cuda="13.0", cuda_available=False))), "torch")
    assert torch.level == FAIL and "580" in torch.found
    assert check(run_checks(facts(driver="580.65.06", torch=TorchFacts("2.13.0+cu130", cuda="13.0",
                                                                         cuda_available=True))), "torch").level == OK
    # An H100's real readings (NVML's driver string, torch 2.11.0+cu130), taken on a GPU machine on 2026-12-05.
    h100 = GpuInfo("NVIDIA H100 80GB HBM3", 85520809984, 85017493504, (9, 0))
    assert check(run_checks(facts(gpu=h100, driver="580.159.04", torch=TorchFacts("2.11.0+cu130", cuda="13.0",
                                                                                  cuda_available=True))),
                 "torch").level == OK


def test_a_rocm_torch_is_named_rocm_not_cuda():
    torch = check(run_checks(facts(gpu=None, driver=None,
                                   torch=TorchFacts("2.13.0+rocm6.4", hip="6.4.1", cuda_available=True))), "torch")
    assert torch.level == OK and "ROCm 6.4.1" in torch.found and "CUDA" not in torch.found


def test_apple_silicon_and_intel_macs_are_told_what_the_studio_supports():
    mac = dict(os_name="darwin", gpu=None, driver=None)
    arm = check(run_checks(facts(machine="arm64", torch=TorchFacts("2.13.0", mps_available=True), **mac)), "torch")
    assert arm.level == OK and "MPS" in arm.found and "4-bit" in arm.found
    intel = check(run_checks(facts(machine="x86_64", torch=TorchFacts("2.2.2"), **mac)), "torch")
    assert intel.level == FAIL and "Intel Mac" in intel.found


def test_a_cpu_machine_without_a_card_is_ok_and_named():
    torch = check(run_checks(facts(gpu=None, driver=None, torch=TorchFacts("2.13.0+cpu"))), "torch")
    assert torch.level == OK and "AMD Ryzen 5 7600" in torch.found


def test_torch_that_does_not_import_fails_with_the_install_command():
    torch = check(run_checks(facts(torch=TorchFacts(None, error="OSError: [WinError 126] c10.dll"))), "torch")
    assert torch.level == FAIL and "c10.dll" in torch.found and "cu128" in torch.fix


def test_bitsandbytes_kernels_that_fail_on_the_gpu_fail_the_check():
    checks = run_checks(facts(bitsandbytes_error="RuntimeError: CUDA Setup failed"))
    assert check(checks, "bitsandbytes").level == FAIL
    assert check(run_checks(facts(bitsandbytes=None)), "bitsandbytes").level == WARN


def test_the_real_4bit_matmul_is_right_here_and_a_wrong_kernel_is_caught(monkeypatch):
    assert doctor.probe_bitsandbytes(on_gpu=False) == ""
    import bitsandbytes

    monkeypatch.setattr(bitsandbytes, "matmul_4bit", lambda x, w, quant_state: (x @ x.new_ones(x.shape[1], 64)))
    assert doctor.probe_bitsandbytes(on_gpu=False).startswith("wrong numbers")


def test_memory_and_disk_against_what_the_model_needs():
    needs = Needs(model="org/big", vram_bytes=10 * GIB, download_bytes=16 * GIB, run_bytes=GIB)
    small_disk = (Disk("the Hugging Face cache", "/home/alice/.cache/huggingface/hub", 5 * GIB),
                  Disk("the runs folder", "/home/alice/runs", 100 * GIB))
    checks = run_checks(facts(disks=small_disk), needs)
    assert check(checks, "memory").level == WARN and "needs about 10.00 GiB" in check(checks, "memory").found
    cache = [c for c in checks if c.key == "disk"][0]
    assert cache.level == FAIL and "needs 16.0 GiB" in cache.found and "HF_HOME" in cache.fix
    assert [c for c in checks if c.key == "disk"][1].level == OK


def test_window_exports_and_versions():
    checks = run_checks(facts(display="Qt cannot open a window: missing system libraries libxcb-cursor.so.0 (for its "
                                      "xcb platform plugin) — install them with: sudo apt install libxcb-cursor0",
                              quantizer=None, ollama=None, versions={**TESTED, "transformers": "5.10.0"}))
    window = check(checks, "window")
    assert window.level == WARN and window.fix == "install them with: sudo apt install libxcb-cursor0"
    assert check(checks, "quantizer").level == WARN and "llama-cpp" in check(checks, "quantizer").fix
    assert check(checks, "ollama").level == WARN
    versions = check(checks, "versions")
    assert versions.level == WARN and "transformers 5.10.0 (CI tests 5.25.0)" in versions.found
    assert "ci-constraints.txt" in versions.fix and "transformers==5.25.0" in versions.fix


def test_the_constraints_ci_installs_with_are_the_doctors():
    ci = (Path(__file__).parents[3] / ".ci" / "run").read_text()
    assert "-c resources/ci-constraints.txt" in ci
    assert TESTED["torch"] == "2.13.0" and "transformers" in TESTED


@pytest.mark.parametrize("os_name, machine, driver, local", [
    ("linux", "x86_64", None, "cpu"), ("windows", "AMD64", None, "cpu"), ("linux", "x86_64", "550.54.14", "cu128"),
    ("windows", "AMD64", "560.94", "cu128"), ("linux", "x86_64", "470.82.01", "cpu"), ("linux", "aarch64", "570.1", "cu128"),
    ("darwin", "arm64", None, ""),
])
def test_the_torch_build_is_a_function_of_the_machines_facts(os_name, machine, driver, local):
    build = choose_torch(os_name, machine, driver)
    assert build.local == local and build.supported
    assert (build.index is None) == (local == "")
    assert not choose_torch("darwin", "x86_64", None).supported
    assert driver_needed("12.8", "linux") == "525.60.13" and driver_needed("12.1", "windows") == "528.33"
    assert driver_satisfies("525.60.13", "12.8", "linux") and not driver_satisfies("525.60.12", "12.8", "linux")


def test_install_sh_runs_the_same_rule(tmp_path):
    rule = Path(__file__).parents[3] / "studio" / "core" / "system" / "torch_build.py"
    out = subprocess.run([sys.executable, "-I", str(rule), "--os", "linux", "--machine", "x86_64",
                          "--driver", "550.54.14"], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.splitlines()[:2] == ["cu128", "https://download.pytorch.org/whl/cu128"]


def test_needs_of_a_model_not_downloaded_count_its_weights():
    from studio.core.config.settings import RunConfig

    config = RunConfig()
    config.model.name_or_path = "meta-llama/Llama-3.2-1B-Instruct"  # not in the cache: the bundled shape
    needs = needs_for(config)
    assert 2.0e9 < needs.download_bytes < 3.0e9  # 1.24B parameters in 16 bits
    assert needs.vram_bytes > 0 and needs.run_bytes > 0


def test_the_banner_runs_the_checks_at_a_first_launch_and_when_the_device_changes(tmp_path):
    device = ["RTX 4060 | driver 560.94 | torch 2.13.0+cpu"]
    session = DoctorSession(record=tmp_path / "doctor.json", fingerprint=lambda: device[0])
    assert session.start_up() == (True, [])
    report = examine(None, gather=lambda **_: facts(os_name="windows", driver="560.94",
                                                      torch=TorchFacts("2.13.0+cpu")))
    seen = []
    session.subscribe(seen.append)
    session.apply(report)
    assert seen == [report] and [c.key for c in session.banner] == ["torch"]
    again = DoctorSession(record=tmp_path / "doctor.json", fingerprint=lambda: device[0])
    due, banner = again.start_up()
    assert not due and [c.key for c in banner] == ["torch"] and "CPU-only" in banner[0].found
    device[0] = "RTX 4060 | driver 560.94 | torch 2.13.0+cu128"
    assert DoctorSession(record=tmp_path / "doctor.json", fingerprint=lambda: device[0]).start_up() == (True, [])


def test_the_diagnostics_report_hides_the_user_the_token_and_the_data(tmp_path):
    from studio.core.runs.store import RunStore

    store = RunStore(tmp_path / "runs")
    run = store.new_run("support-bot")
    run.events_path.write_text(json.dumps({"event": "failed", "kind": "data", "time": 1.0,
                                           "message": "/home/alice/work/customers_2026.jsonl:12: no assistant turn "
                                                      "(token hf_abcdefghijklmnopqrstuvwxyz123)"}) + "\n")
    report = examine(None, gather=lambda **_: facts(disks=(
        Disk("the Hugging Face cache", "/media/alice/big/hf", 50 * GIB),
        Disk("the runs folder", "C:\\Users\\alice\\AppData\\Local\\finetune-studio\\runs", 50 * GIB))))
    text = diagnostics_report(report, runs=[run.path for run in store.runs()], home="/home/alice")
    assert "alice" not in text and "customers_2026" not in text and "hf_abcdefghij" not in text
    assert "/media/<user>/big/hf" in text and "C:\\Users\\<user>\\AppData" in text
    assert "kind data" in text and "<data file>" in text and "no assistant turn" in text
    assert "NVIDIA GeForce RTX 4060" in text and "driver 550.54.14" in text and "transformers 5.25.0" in text


def test_doctor_exits_2_when_a_check_fails(monkeypatch, capsys):
    full = (Disk("the Hugging Face cache", "/hf", GIB), Disk("the runs folder", "/runs", 100 * GIB))
    monkeypatch.setattr(doctor_session, "gather_facts", lambda **_: facts(disks=full))
    assert main(["doctor", "--model", "meta-llama/Llama-3.2-1B-Instruct"]) == 2
    assert "[FAIL] disk under the Hugging Face cache" in capsys.readouterr().out
    assert main(["doctor", "--json"]) == 0  # no model: nothing to download, warnings only
    assert json.loads(capsys.readouterr().out)["level"] in (OK, WARN)


def test_the_real_doctor_passes_on_this_cpu_machine_and_names_the_cpu():
    cpu = doctor._cpu_name()
    out = subprocess.run([sys.executable, "-m", "studio", "doctor", "--json"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    document = json.loads(out.stdout)
    torch = next(c for c in document["checks"] if c["key"] == "torch")
    assert torch["level"] == OK and cpu in torch["found"]
    assert next(c for c in document["checks"] if c["key"] == "bitsandbytes")["level"] == OK


def test_the_doctor_reads_the_card_where_the_config_tab_does_and_catches_the_cpu_torch(monkeypatch):
    """NVML faked at its boundary (pynvml): the real gather, on this machine's real CPU-only torch, sees the card and
    its driver through gpu.detect_gpu — the Config tab's reading — and warns with the CUDA build for that driver."""
    import types

    from studio.core.system import gpu

    nvml = types.ModuleType("pynvml")
    nvml.NVMLError = type("NVMLError", (Exception,), {})
    nvml.nvmlInit = lambda: None
    nvml.nvmlDeviceGetHandleByIndex = lambda index: f"handle-{index}"
    nvml.nvmlDeviceGetName = lambda handle: b"NVIDIA GeForce RTX 4060"
    nvml.nvmlDeviceGetMemoryInfo = lambda handle: types.SimpleNamespace(total=8 * GIB, used=GIB, free=7 * GIB)
    nvml.nvmlDeviceGetCudaComputeCapability = lambda handle: (8, 9)
    nvml.nvmlSystemGetDriverVersion = lambda: "550.54.14"
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.setattr(gpu, "_nvml_initialised_module", None)

    found = doctor.gather_facts()
    assert found.gpu == gpu.detect_gpu() and found.gpu.name == "NVIDIA GeForce RTX 4060"
    assert found.driver == "550.54.14" and found.torch.cuda is None  # the real torch here is the CPU build
    torch = check(run_checks(found), "torch")
    assert torch.level == WARN and "CPU-only" in torch.found and "whl/cu128" in torch.fix
    assert not found.torch.cuda_available and found.bitsandbytes_error == ""  # the 4-bit matmul ran on the CPU
