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

Run as `python -m studio.core.eval.llama_child JOB.json REPLIES.jsonl`.
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


def main(argv: list[str] | None = None) -> int:
    job_path, replies_path = (argv if argv is not None else sys.argv[1:])[:2]
    answer(json.loads(Path(job_path).read_text(encoding="utf-8")), Path(replies_path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
