"""Putting an export into Ollama: `ollama create` never replaces a listed model unasked, and replies come from
Ollama's chat API. Ollama cannot be installed on the development machines, so the `ollama` command is a small
stand-in speaking its documented CLI output, and the server a local HTTP server speaking /api/chat's JSON."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from ollama_standin import install_fake_ollama_cli

from studio.core.eval.ollama_api import chat_reply
from studio.core.export.ollama_server import (
    OllamaError, OllamaModelExists, create_command, create_in_ollama, listed_models, ollama_install_hint,
)

@pytest.fixture
def fake_ollama(tmp_path, monkeypatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    install_fake_ollama_cli(bin_dir)
    monkeypatch.setenv("FAKE_OLLAMA_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path / "store"


@pytest.fixture
def modelfile(tmp_path) -> Path:
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "bot.gguf").write_bytes(b"GGUF")
    path = folder / "bot.Modelfile"
    path.write_text("FROM ./bot.gguf\nPARAMETER stop \"<|eot_id|>\"\n")
    return path


def test_create_puts_the_modelfile_into_ollama_from_its_folder(fake_ollama, modelfile):
    assert create_in_ollama("support-bot", modelfile) == "success"
    assert listed_models() == ["support-bot:latest"]
    assert (fake_ollama / "support-bot:latest").read_text() == modelfile.read_text()


def test_a_listed_model_is_never_replaced_unasked(fake_ollama, modelfile):
    create_in_ollama("support-bot", modelfile)
    (fake_ollama / "support-bot:latest").write_text("the user's own model")

    with pytest.raises(OllamaModelExists, match="already has a model named 'support-bot:latest'"):
        create_in_ollama("support-bot:latest", modelfile)
    assert (fake_ollama / "support-bot:latest").read_text() == "the user's own model"

    create_in_ollama("support-bot", modelfile, replace=True)  # the user said yes
    assert (fake_ollama / "support-bot:latest").read_text() == modelfile.read_text()


def test_without_ollama_the_user_gets_the_install_step_and_the_command(tmp_path, modelfile, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    with pytest.raises(OllamaError) as error:
        create_in_ollama("support-bot", modelfile)
    assert "https://ollama.com" in str(error.value)
    assert "ollama create support-bot -f bot.Modelfile" in str(error.value)
    assert create_command("support-bot", modelfile) == ["ollama", "create", "support-bot", "-f", "bot.Modelfile"]
    assert "install.sh" in ollama_install_hint("Linux") and "OllamaSetup.exe" in ollama_install_hint("Windows")


class _ChatAPI(BaseHTTPRequestHandler):
    requests: list[dict] = []

    def do_POST(self):  # noqa: N802 - http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _ChatAPI.requests.append({"path": self.path, **body})
        if body["model"] != "support-bot":
            self.send_response(404)
            self.end_headers()
            self.wfile.write(b'{"error": "model \\"x\\" not found, try pulling it first"}')
            return
        answer = {"model": body["model"], "message": {"role": "assistant", "content": "Faturanız 10 TL."},
                  "done": True, "done_reason": "stop"}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_a_reply_comes_from_ollama_s_chat_api_greedy():
    server = HTTPServer(("127.0.0.1", 0), _ChatAPI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"http://127.0.0.1:{server.server_port}"
    try:
        messages = [{"role": "user", "content": "Faturam ne kadar?"}]
        reply = chat_reply("support-bot", messages, max_new_tokens=64, host=host)
        with pytest.raises(OllamaError, match="refused the request: 404"):
            chat_reply("other", messages, max_new_tokens=64, host=host)
    finally:
        server.shutdown()

    assert reply.text == "Faturanız 10 TL." and not reply.truncated
    sent = _ChatAPI.requests[0]
    assert sent["path"] == "/api/chat" and sent["stream"] is False and sent["messages"] == messages
    assert sent["options"]["temperature"] == 0 and sent["options"]["num_predict"] == 64


def test_a_server_that_is_not_running_is_named():
    with pytest.raises(OllamaError, match="ollama serve"):
        chat_reply("support-bot", [{"role": "user", "content": "hi"}], max_new_tokens=8, host="http://127.0.0.1:9")


def test_the_cli_creates_the_model_and_refuses_a_listed_name(fake_ollama, modelfile, run_studio):
    made = run_studio("export", "ollama", modelfile, "--name", "support-bot")
    again = run_studio("export", "ollama", modelfile, "--name", "support-bot")
    replaced = run_studio("export", "ollama", modelfile, "--name", "support-bot", "--replace")

    assert made.returncode == 0 and made.stdout.strip() == "success", made.stderr
    assert again.returncode == 2 and "already has a model named 'support-bot'" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    assert replaced.returncode == 0


def test_the_check_s_cases_are_answered_by_ollama_one_by_one_and_a_cancel_stops():
    from studio.core.eval.cases import EvalCase
    from studio.core.eval.ollama_api import ollama_replies

    server = HTTPServer(("127.0.0.1", 0), _ChatAPI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"http://127.0.0.1:{server.server_port}"
    cases = [EvalCase(str(i), ({"role": "user", "content": f"Fatura {i}?"},), "Faturanız 10 TL.") for i in (1, 2)]
    seen: list[str] = []
    try:
        replies = ollama_replies("support-bot", cases, 32, lambda d, t, m: seen.append(m), lambda: False, host=host)
        cancelled = ollama_replies("support-bot", cases, 32, lambda *a: None, lambda: True, host=host)
    finally:
        server.shutdown()

    assert replies == {"1": ("Faturanız 10 TL.", False, ""), "2": ("Faturanız 10 TL.", False, "")}
    assert seen == ["Ollama: 1/2", "Ollama: 2/2"] and cancelled is None
