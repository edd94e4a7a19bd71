"""sessions.export without Qt: the GGUF type list, the preselection and why, the user's choice, and a verification
that could not run showing no score."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from studio.core.eval.verify import LLAMA_CPP, RULE, CaseCheck, ExportVerification
from studio.core.plan.gguf_fit import Budget
from studio.core.plan.vram import GIB, ModelShape
from studio.core.sessions.export import ExportSession

ROOT = Path(__file__).resolve().parents[3]
LLAMA_8B = ModelShape.from_config(json.loads((ROOT / "resources/model_configs/llama-3.1-8b.json").read_text()))


def test_the_session_preselects_by_the_card_and_follows_the_context_and_the_users_choice():
    session = ExportSession(Budget(8 * GIB, "cuda", "RTX 4060"), k_quants=True)
    seen: list[str] = []
    session.subscribe(lambda: seen.append(session.gguf_type))
    session.set_shape(LLAMA_8B, max_length=1024)
    assert session.context == 2048, "twice the run's max_length, at least 2048"
    session.set_context(4096)
    assert session.gguf_type == "q6_k" and session.preselected and session.why().startswith("Preselected: Q6_K")
    session.set_context(8192)  # KV cache 1 GiB, compute 576 MiB: Q6_K needs 7472 MiB > 7000, Q5_K_M 6715 MiB
    assert session.gguf_type == "q5_k_m"
    session.set_context(16384)  # KV cache 2 GiB, compute 1104 MiB: not even Q4_K_M fits
    assert session.gguf_type == "q4_k_m" and "part of it will run on the CPU" in session.why()
    assert seen[-3:] == ["q6_k", "q5_k_m", "q4_k_m"], "every change is told to the dialog"
    session.set_gguf_type("q8_0")
    assert session.gguf_type == "q8_0" and not session.preselected
    assert session.why().startswith("Chosen by you: Q8_0 needs") and "does not fit" in session.why()
    session.set_gguf_type(None)
    assert session.gguf_type == "q4_k_m"
    rows = {row[0]: row for row in session.rows()}
    assert not any(row[3] for row in rows.values()), "nothing fits at 16384 tokens"
    assert rows["q4_k_m"][4] and not rows["q5_1"][4], "the legacy types are offered only without llama.cpp"


def test_without_a_quantizer_a_k_quant_cannot_be_chosen():
    session = ExportSession(Budget(8 * GIB, "cuda"), k_quants=False)
    session.set_shape(LLAMA_8B)
    session.set_context(4096)
    with pytest.raises(ValueError, match="needs llama.cpp's quantizer"):
        session.set_gguf_type("q4_k_m")
    assert session.gguf_type == "q5_1"


def test_a_run_without_a_readable_base_says_why_instead_of_sizes(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tmp_path / "gone")}))
    session = ExportSession(Budget(8 * GIB, "cuda"), k_quants=True)
    session.set_source(adapter)
    assert session.choice is None and session.rows() == [] and "gone" in session.why()


def test_a_check_that_could_not_run_shows_no_score_and_a_result_states_the_rule(tmp_path):
    session = ExportSession(Budget(8 * GIB, "cuda"), k_quants=True)
    session.set_verification(error="llama.cpp crashed while loading the file (killed by SIGSEGV)")
    text = session.verification_text()
    assert text.startswith("The check could not run, so there is no score") and "/" not in text.split(":")[0]
    result = ExportVerification(tmp_path / "m.gguf", "gguf", LLAMA_CPP, "completed", tmp_path, "10 cases",
                                [CaseCheck(str(i), "q", "a", "a", task_studio=True, task_export=i > 1)
                                 for i in range(10)], type_label="Q4_K_M")
    session.set_verification(result)
    assert session.verification_text().endswith("broken export: tool call right in 8 cases against the trained "
                                                "model's 10, more than 1 fewer")
    assert session.verify_rule == RULE and "at least one case" in RULE
