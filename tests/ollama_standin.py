"""Ollama's own pieces, for the tests: its template language (Go's text/template, tests/go/ollama_template) and a
stand-in of its chat API that renders each request with the Modelfile's TEMPLATE in Go and answers with llama.cpp
from the Modelfile's GGUF file, greedy, stopping at the Modelfile's stop strings — what `ollama serve` does with a
created model. Ollama itself cannot be installed on the development machines (docs/BENCHMARKS.md says where the real
one has been run)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
import stat

GO_RENDERER = Path(__file__).resolve().parent / "go" / "ollama_template"


def build_go_renderer(folder: Path) -> Path:
    """Go's text/template as a program (built with the `go` command: Debian's golang-go, which .ci/run installs)."""
    go = shutil.which("go")
    assert go, "the `go` command is needed to check Ollama templates (Debian/Ubuntu: apt-get install golang-go)"
    binary = folder / "ollama-template"
    env = {"HOME": str(folder), "GOCACHE": str(folder / "gocache"), "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local",
           "PATH": str(Path(go).parent)}
    subprocess.run([go, "build", "-o", str(binary), "."], cwd=GO_RENDERER, env=env, check=True, timeout=300)
    return binary


def ollama_prompt(renderer: Path, template: str, messages: list[dict[str, str]], system: str | None = None) -> str:
    """The prompt Ollama builds: Go's text/template over the messages, the Modelfile's SYSTEM put first."""
    request = {"template": template, "messages": messages, "system": system or ""}
    done = subprocess.run([str(renderer)], input=json.dumps(request), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def read_modelfile(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    template = re.search(r'TEMPLATE """(.*?)"""', text, re.DOTALL)
    system = re.search(r'SYSTEM """(.*?)"""', text, re.DOTALL)
    return {"gguf": (path.parent / re.search(r"^FROM\s+(\S+)", text, re.MULTILINE).group(1)).resolve(),
            "template": template.group(1) if template else None, "system": system.group(1) if system else None,
            "stops": [json.loads(s) for s in re.findall(r"^PARAMETER stop (.+)$", text, re.MULTILINE)]}


_LLAMA_SERVER = """
import json, sys
from llama_cpp import Llama
llm = Llama(sys.argv[1], n_ctx=1024, n_threads=2, verbose=False)
for line in sys.stdin:
    job = json.loads(line)
    out = llm.create_completion(job["prompt"], max_tokens=job["max_tokens"], temperature=0, top_k=1,
                                stop=job["stops"])
    choice = out["choices"][0]
    print(json.dumps({"text": choice["text"], "length": choice["finish_reason"] == "length"}), flush=True)
"""


class StandInOllama:
    """`/api/chat` for models created from Modelfiles (name → Modelfile), answered as described above."""

    def __init__(self, renderer: Path, models: dict[str, Path]):
        self.renderer, self.models, self.children = renderer, {n: read_modelfile(p) for n, p in models.items()}, {}
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                answer = stand_in.chat(body)
                data = json.dumps(answer).encode()
                self.send_response(200 if "error" not in answer else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"http://127.0.0.1:{self.server.server_port}"

    def chat(self, body: dict) -> dict:
        model = self.models.get(body["model"].removesuffix(":latest"))
        if model is None:
            return {"error": f"model \"{body['model']}\" not found, try pulling it first"}
        prompt = ollama_prompt(self.renderer, model["template"], body["messages"], model["system"])
        child = self.children.get(body["model"])
        if child is None:
            child = self.children[body["model"]] = subprocess.Popen(
                [sys.executable, "-c", _LLAMA_SERVER, str(model["gguf"])], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, text=True)
        child.stdin.write(json.dumps({"prompt": prompt, "max_tokens": body["options"]["num_predict"],
                                      "stops": model["stops"]}) + "\n")
        child.stdin.flush()
        reply = json.loads(child.stdout.readline())
        return {"model": body["model"], "message": {"role": "assistant", "content": reply["text"]}, "done": True,
                "done_reason": "length" if reply["length"] else "stop"}

    def __enter__(self) -> StandInOllama:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        for child in self.children.values():
            child.kill()
            child.wait()


FAKE_OLLAMA_CLI = """#!{python}
import json, os, sys
from pathlib import Path
store = Path(os.environ["FAKE_OLLAMA_STORE"])
store.mkdir(exist_ok=True)
if sys.argv[1] == "list":
    print("NAME                 ID              SIZE      MODIFIED")
    for model in sorted(store.iterdir()):
        print(f"{{model.name:<20}} 0123456789ab    4.9 GB    2 minutes ago")
elif sys.argv[1] == "create":
    name, modelfile = sys.argv[2], Path(sys.argv[4])
    if not modelfile.is_file():
        print(f"Error: open {{modelfile}}: no such file or directory", file=sys.stderr); sys.exit(1)
    tag = name if ":" in name else name + ":latest"
    (store / tag).write_text(modelfile.read_text())
    print("gathering model components\\nwriting manifest\\nsuccess")
"""
"""The `ollama` command's `list` and `create NAME -f FILE`, as its documented output shows them, over a folder of
created models (FAKE_OLLAMA_STORE)."""


def install_fake_ollama_cli(bin_dir: Path) -> Path:
    program = bin_dir / "ollama"
    program.write_text(FAKE_OLLAMA_CLI.format(python=sys.executable))
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    return program
