"""llama.cpp answering an export check's cases in a process of its own.

llama.cpp is native code: a model it cannot run can end the process with a segmentation fault rather than an
exception (seen with llama-cpp-python 0.3.36 on the demo model in q8_0 on one machine, and on a 135M model in
q8_0 on another, where the same file answered with the CPU weight repacking off). Inside the window that would end
the studio; in a child it ends only the check, which then says so. The parent (`verify._llama_cpp_replies`) writes
a job file and reads the replies this process appends, one JSON line per case, flushed as each is answered.

The repacking: llama.cpp's CPU backend may move a weight matrix into an "extra buffer type" (CPU_REPACK) that
interleaves the rows of 4, 8 or 16 quantised blocks for the CPU's vector units. In the llama.cpp of
llama-cpp-python 0.3.36 (ggml-cpu/repack.cpp) q8_0 is repacked on ARM (NEON with i8mm or dotprod) and RISC-V V
only; on x86 only q4_0, q4_K, q2_K and iq4_nl are (AVX2, AVX512). On this studio's x86 test machine (AMD EPYC,
AVX512) the demo's q8_0 and f16 files are not repacked ("cannot be used with preferred buffer type CPU_REPACK")
and answered 10/10 like the studio, with and without repacking, built with GGML_NATIVE off and on.

Run as `python -m studio.core.eval.llama_child JOB.json REPLIES.jsonl`. The same child makes K-quants with
llama.cpp's own quantizer (`quantize F16.gguf OUT.gguf q4_k_m`, export.quantize) and loads a file with llama.cpp's
log on to report the buffers it allocates (`measure FILE.gguf N_CTX`, the check of plan.gguf_fit's sizes).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


LOADED = "llama-child: model loaded"
"""Printed once llama.cpp has loaded the file: the parent tells a crash while loading from one while answering."""


def answer(job: dict, replies_path: Path) -> None:
    import llama_cpp

    if not job.get("repack", True):
        without_repacking()
    # n_gpu_layers=-1 offloads every layer where llama.cpp was built with a GPU backend; a CPU build ignores it.
    llm = llama_cpp.Llama(model_path=job["model_path"], n_ctx=job["n_ctx"], n_gpu_layers=-1, seed=0, verbose=False)
    print(LOADED, flush=True)
    try:
        with replies_path.open("a", encoding="utf-8") as out:
            for case in job["cases"]:
                try:
                    result = llm.create_chat_completion(messages=case["messages"], temperature=0.0, top_k=1,
                                                        max_tokens=job["max_new_tokens"])
                except ValueError as error:  # the prompt does not fit the context
                    line = {"case": case["id"], "reply": "", "truncated": False, "error": f"llama.cpp: {error}"}
                else:
                    choice = result["choices"][0]
                    line = {"case": case["id"], "reply": choice["message"].get("content") or "",
                            "truncated": choice.get("finish_reason") == "length", "error": ""}
                out.write(json.dumps(line, ensure_ascii=False) + "\n")
                out.flush()
    finally:
        llm.close()


def without_repacking() -> None:
    """Load models with llama.cpp's CPU "extra buffer types" off (`use_extra_bufts`): the weights stay in the file's
    layout instead of being repacked into interleaved blocks for the CPU's vector units. llama-cpp-python's Llama()
    has no argument for it, so its default model parameters (which Llama() starts from) get the field set."""
    import llama_cpp.llama_cpp as native

    defaults = native.llama_model_default_params

    def params_without_repacking():
        params = defaults()
        params.use_extra_bufts = False
        return params

    native.llama_model_default_params = params_without_repacking


NO_LLAMA_CPP = 3
"""The exit status of a quantize or measure child that cannot import llama_cpp."""
QUANTIZE_FAILED = 4


def quantize(source: Path, output: Path, gguf_type: str, threads: int) -> int:
    """llama.cpp's `llama_model_quantize` from an f16 GGUF file to `gguf_type` ("q4_k_m"); its per-tensor log (the
    type each tensor got, and why a tensor fell back) goes to this process's stderr."""
    try:
        import llama_cpp.llama_cpp as native
    except ImportError as error:
        print(f"llama-child: llama_cpp cannot be imported: {error}", file=sys.stderr, flush=True)
        return NO_LLAMA_CPP
    params = native.llama_model_quantize_default_params()
    params.ftype = getattr(native, f"LLAMA_FTYPE_MOSTLY_{gguf_type.upper()}")
    params.nthread = threads
    if native.llama_model_quantize(str(source).encode(), str(output).encode(), params) != 0:
        print(f"llama-child: llama.cpp's quantizer failed on {source}", file=sys.stderr, flush=True)
        return QUANTIZE_FAILED
    return 0


def measure(model_path: Path, n_ctx: int) -> int:
    """Load the file on the CPU with llama.cpp's log on: it prints its model, KV and compute buffer sizes."""
    try:
        import llama_cpp
    except ImportError as error:
        print(f"llama-child: llama_cpp cannot be imported: {error}", file=sys.stderr, flush=True)
        return NO_LLAMA_CPP
    without_repacking()  # the file's layout, as a GPU holds it: the CPU's repacked copies are a CPU-only extra
    llm = llama_cpp.Llama(model_path=str(model_path), n_ctx=n_ctx, n_gpu_layers=0, verbose=True)
    llm.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if args[0] == "quantize":
        return quantize(Path(args[1]), Path(args[2]), args[3], int(args[4]) if len(args) > 4 else 0)
    if args[0] == "measure":
        return measure(Path(args[1]), int(args[2]))
    job_path, replies_path = args[:2]
    answer(json.loads(Path(job_path).read_text(encoding="utf-8")), Path(replies_path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
