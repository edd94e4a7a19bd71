"""llama.cpp answering an export check's cases in a process of its own.

llama.cpp is native code: a model it cannot run can end the process with a segmentation fault rather than an
exception (measured here: llama-cpp-python 0.3.36 on the 128-wide demo model in q8_0, whether quantised by the
studio or by llama.cpp itself). Inside the window that would end the studio; in a child it ends only the check,
which then says so. The parent (`verify._llama_cpp_replies`) writes a job file and reads the replies this process
appends, one JSON line per case, flushed as each is answered, so the cases answered before a crash are kept.

Run as `python -m studio.core.eval.llama_child JOB.json REPLIES.jsonl`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def answer(job: dict, replies_path: Path) -> None:
    import llama_cpp

    # n_gpu_layers=-1 offloads every layer where llama.cpp was built with a GPU backend; a CPU build ignores it.
    llm = llama_cpp.Llama(model_path=job["model_path"], n_ctx=job["n_ctx"], n_gpu_layers=-1, seed=0, verbose=False)
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


def main(argv: list[str] | None = None) -> int:
    job_path, replies_path = (argv if argv is not None else sys.argv[1:])[:2]
    answer(json.loads(Path(job_path).read_text(encoding="utf-8")), Path(replies_path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
