"""The Grow panel's "Paraphrase requests" button, clicked (issue 25): the panel on a small tool-call file paraphrases
with a stand-in OpenAI-compatible server running in the test — kept and rejected replies counted in the status, the
progress bar moved, the accepted in the recipe and written as generated rows; Cancel mid-run keeps what was accepted;
a server that is not there is one clear line. Fast lane: no training, no real model."""

from __future__ import annotations

import json
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from studio.core.chat.paraphrase import REASONS
from studio.ui.tabs.dataset_tab import QtDatasetTab

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
sys.path.insert(0, str(ROOT / "benchmarks"))

from _callcentre import write_callcentre  # noqa: E402

TIMEOUT_MS = 30_000
REWORDINGS = ("Rica etsem {values} için bakar mısınız?", "Acaba {values} hakkında yardım alabilir miyim?",
              "Şu bilgiyle ilgilenir misiniz: {values}")
"""Turkish rewordings the stand-in writes, one per seed in turn: a request's two accepted ones differ from each
other and from the original."""


def _prompt_parts(prompt: str) -> tuple[str, str]:
    """(the values the prompt asks to keep, the message to reword), read back from paraphrase.PROMPT."""
    values = prompt.split("Keep these values exactly as written: ", 1)[1].split(". Reply", 1)[0]
    return values, prompt.rsplit("Message: ", 1)[1]


class StandInServer:
    """An OpenAI-compatible chat endpoint on 127.0.0.1, in a thread of the test. Its reply rewords the message
    deterministically (by the request's seed); a message that begins with its number comes back without the
    number (what a careless model does), the others keep every value. With `hold_from=N` the N-th request and
    after wait for `release` (a slow model)."""

    def __init__(self, *, hold_from: int = 0):
        self.requests: list[dict] = []
        self.dropped = 0
        self.hold_from = hold_from
        self.release = threading.Event()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(body)
                    number = len(server.requests)
                if self.path != "/v1/chat/completions":
                    self.send_error(404)
                    return
                if server.hold_from and number >= server.hold_from:
                    server.release.wait(TIMEOUT_MS / 1000)
                reply = json.dumps({"choices": [{"message": {"content": server.reword(body)}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):  # quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def reword(self, body: dict) -> str:
        values, message = _prompt_parts(body["messages"][-1]["content"])
        if message[:1].isdigit():
            with self.lock:
                self.dropped += 1
            values = "numaram"
        return REWORDINGS[body["seed"] % len(REWORDINGS)].format(values=values)

    def __enter__(self) -> StandInServer:
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.release.set()  # a held request answers, so the server can stop
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


@pytest.fixture
def grow_panel(qtbot, tmp_path):
    """The Dataset tab on ten call-centre dialogues, its Grow panel shown with the slots found."""
    tab = QtDatasetTab()
    qtbot.addWidget(tab)
    tab.resize(1180, 740)
    tab.show()
    source = write_callcentre(tmp_path / "calls.jsonl", 10, seed=6)
    tab.open_path(str(source))
    qtbot.waitUntil(lambda: not tab.is_loading() and tab.data is not None, timeout=TIMEOUT_MS)
    panel = tab.grow_panel
    tab.bottom_tabs.setCurrentWidget(panel)
    qtbot.mouseClick(panel.take_button, Qt.MouseButton.LeftButton)
    assert panel.paraphrase_button.isEnabled() and not panel.cancel_button.isEnabled()
    try:
        yield tab, panel
    finally:
        tab.shutdown()


def _idle(panel) -> bool:
    return not panel.session.paraphrasing and not panel.paraphrases.busy


def _status_lines(panel) -> list[str]:
    return panel.status_label.text().splitlines()


def test_paraphrase_clicked_counts_kept_and_rejected_and_writes_them_as_generated_rows(qtbot, grow_panel):
    tab, panel = grow_panel
    session = panel.session
    with StandInServer() as server:
        panel.writer_edit.setText(server.url)
        qtbot.mouseClick(panel.paraphrase_button, Qt.MouseButton.LeftButton)
        assert not panel.paraphrase_button.isEnabled() and panel.cancel_button.isEnabled()
        qtbot.waitUntil(lambda: _idle(panel), timeout=TIMEOUT_MS)

    outcome = session.last_paraphrase
    asked = len(server.requests)
    assert outcome is not None and not outcome.cancelled and outcome.asked == asked
    # Every reply is judged and counted: the kept ones, and the careless ones by their reason.
    assert outcome.accepted and server.dropped
    assert outcome.rejected["slot value missing"] == server.dropped
    assert len(outcome.accepted) + sum(outcome.rejected.values()) == asked and set(outcome.rejected) <= set(REASONS)
    status = panel.status_label.text()
    assert f"Paraphrase: {len(outcome.accepted)} accepted of {asked} asked" in status
    assert f"slot value missing {server.dropped}" in status
    # The bar moved to the end: every training original's request was asked about.
    assert panel.progress_bar.value() == panel.progress_bar.maximum() > 0
    assert "left" in panel.eta_label.text()
    assert panel.paraphrase_button.isEnabled() and not panel.cancel_button.isEnabled()

    # Kept in the recipe; written, each is a generated row that says which turn it rewords.
    assert session.recipe.paraphrases == outcome.accepted
    qtbot.mouseClick(panel.write_button, Qt.MouseButton.LeftButton)
    recipe_text = session.recipe_path.read_text(encoding="utf-8")
    assert all(json.dumps(p.text, ensure_ascii=False) in recipe_text for p in outcome.accepted)
    generated = panel.preview_list.topLevelItem(1)
    assert generated.text(0).startswith("Generated")
    shown = {generated.child(i).text(0): generated.child(i).text(1) for i in range(generated.childCount())}
    for kept in outcome.accepted:
        assert shown[kept.text].startswith(f"turn {kept.turn} reworded")
    written = [json.loads(line) for line in session.outputs.train.read_text(encoding="utf-8").splitlines()]
    assert {p.text for p in outcome.accepted} <= {row["messages"][1]["content"] for row in written}


def test_cancel_mid_run_keeps_what_was_accepted_and_gives_the_buttons_back(qtbot, grow_panel):
    tab, panel = grow_panel
    session = panel.session
    # Two replies answer at once (the first request's two kept rewordings); the third waits for the test.
    with StandInServer(hold_from=3) as server:
        panel.writer_edit.setText(server.url)
        qtbot.mouseClick(panel.paraphrase_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: len(server.requests) == 3, timeout=TIMEOUT_MS)
        qtbot.mouseClick(panel.cancel_button, Qt.MouseButton.LeftButton)
        server.release.set()  # the reply in flight comes back; the task stops after it
        qtbot.waitUntil(lambda: _idle(panel), timeout=TIMEOUT_MS)
        assert len(server.requests) == 3  # nothing asked after Cancel

    outcome = session.last_paraphrase
    assert outcome is not None and outcome.cancelled and outcome.asked == 3
    assert len(outcome.accepted) + sum(outcome.rejected.values()) == 3
    # The first request's two rewordings, accepted before Cancel, are kept in the recipe and grown.
    assert len(outcome.accepted) >= 2 and session.recipe.paraphrases == outcome.accepted
    assert any(row.variant == "p1" for row in session.grown.train)
    assert "(cancelled)" in panel.status_label.text()
    assert panel.paraphrase_button.isEnabled() and panel.write_button.isEnabled()
    assert not panel.cancel_button.isEnabled()
    assert tab.isVisible()


def test_a_server_that_is_not_running_is_one_clear_line_and_nothing_is_written(qtbot, grow_panel):
    tab, panel = grow_panel
    session = panel.session
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    panel.writer_edit.setText(f"http://127.0.0.1:{port}")
    qtbot.mouseClick(panel.paraphrase_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: _idle(panel), timeout=TIMEOUT_MS)

    endpoint = f"http://127.0.0.1:{port}/v1/chat/completions"
    naming = [line for line in _status_lines(panel) if endpoint in line]
    assert len(naming) == 1 and naming[0].startswith(endpoint + ": ") and "Traceback" not in naming[0]
    assert not any(line.startswith("Paraphrase:") for line in _status_lines(panel))
    assert session.recipe.paraphrases == [] and session.outputs is None
    assert not session.recipe_path.exists() and not list(session.recipe_path.parent.glob("calls.grown*"))
    assert panel.paraphrase_button.isEnabled() and panel.write_button.isEnabled()
    assert not panel.cancel_button.isEnabled()
    assert tab.isVisible()
