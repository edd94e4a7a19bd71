"""The paraphrase filters and loop (issue 25): slot values kept, language unchanged (langid, offline), not a
near-copy of the original or a sibling (chrF), not too long; every rejection counted by reason; progress, an
ETA and cancel; the accepted ones stored in the recipe and reproduced without the model."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from studio.core.chat.paraphrase import ParaphraseError, ServerWriter, judge, paraphrase
from studio.core.data.grow.build import grow
from studio.core.data.grow.recipe import Recipe, load_recipe, save_recipe
from studio.core.data.split import content_hash

ORIGINAL = "0532 123 45 67 numaralı hattımı kapatmak istiyorum."
VALUES = ["0532 123 45 67"]


@pytest.mark.parametrize("candidate, reason", [
    ("", "empty"),
    ("Lütfen hattımı kapatın.", "slot value missing"),
    ("Please close my line 0532 123 45 67 right now, thank you.", "language changed"),
    # What the Gemma 3 270M base model wrote through llama-cpp-python's server (benchmarks/grow_toolcalls.py):
    # the value kept, Turkish to langid, and yet no request — a date and a time the call cannot carry.
    ("Re: 0532 123 45 67, 15/08/2003 - 06:49:25", "number added"),
    ("0532 123 45 67 numaralı hattımı kapatın, 2 gün içinde.", "number added"),
    ("İyiyi hatırlayabilir miyim? 0532 123 45 67. 그런데", "language changed"),
    ("0532 123 45 67 номер hattımı kapatın lütfen.", "language changed"),
    ("0532 123 45 67 numaralı hattımı kapatmak istiyorum!", "near-duplicate of the original"),
    ("0532 123 45 67 hattımın kapatılmasını rica ediyorum, lütfen bugün kapatın, artık kullanmıyorum, teşekkürler, "
     "iyi günler dilerim, kolay gelsin.", "too long"),
])
def test_each_filter_names_its_rejection(candidate, reason):
    assert judge(candidate, ORIGINAL, values=VALUES, siblings=[], max_length=512).reason == reason


def test_a_sibling_near_copy_is_rejected_and_a_real_paraphrase_accepted():
    good = "0532 123 45 67 hattımın kapatılmasını rica ediyorum."
    assert judge(good, ORIGINAL, values=VALUES, siblings=[], max_length=512).accepted
    assert judge(good + " ", ORIGINAL, values=VALUES, siblings=[good], max_length=512).reason == \
        "near-duplicate of a sibling"
    assert judge(good, ORIGINAL, values=VALUES, siblings=[], max_length=20).reason == "too long"
    # A number the original says besides its slot values may be said again.
    assert judge("2 hattımdan 0532 123 45 67 olanın kapatılmasını rica ediyorum.", "2 hattım var, 0532 123 45 67 "
                 "numaralı olanı kapatmak istiyorum.", values=VALUES, siblings=[], max_length=512).accepted


class Scripted:
    """A writer that answers from a list (the loop is under test here; a real server in test_grow_server)."""

    def __init__(self, replies):
        self.replies = list(replies)
        self.prompts = []

    def write(self, prompt, *, seed):
        self.prompts.append(prompt)
        return self.replies.pop(0) if self.replies else ""


class State:
    def __init__(self, cancel_after=None):
        self.reports, self.cancel_after = [], cancel_after

    def progress(self, *values):
        self.reports.append(values)

    def cancelled(self):
        return self.cancel_after is not None and len(self.reports) >= self.cancel_after


def conversation(phone_spoken: str) -> list[dict]:
    phone = phone_spoken.replace(" ", "")
    return [{"role": "user", "content": f"{phone_spoken} numaralı hattımı kapatmak istiyorum."},
            {"role": "assistant", "content": f'<tool_code>close_line({{"phone": "{phone}"}})</tool_code>'}]


def test_the_loop_counts_every_rejection_reports_progress_and_cancels(tmp_path):
    first, second = conversation("0532 123 45 67"), conversation("0544 987 65 43")
    writer = Scripted(["Hattımı kapatın.",  # no number
                       "Please close line 0532 123 45 67 today.",  # English
                       '"0532 123 45 67 hattımın kapatılmasını rica ediyorum."',  # accepted (quotes cleaned)
                       "0532 123 45 67 hattımın kapatılmasını rica ediyorum.",  # its sibling's copy
                       "Artık 0532 123 45 67 numarasını kullanmayacağım, kapatın."])  # accepted
    state = State(cancel_after=1)
    outcome = paraphrase([(content_hash({"messages": first}), first), (content_hash({"messages": second}), second)],
                         writer, per_turn=2, state=state)
    assert [p.text for p in outcome.accepted] == ["0532 123 45 67 hattımın kapatılmasını rica ediyorum.",
                                                  "Artık 0532 123 45 67 numarasını kullanmayacağım, kapatın."]
    assert dict(outcome.rejected) == {"slot value missing": 1, "language changed": 1, "near-duplicate of a sibling": 1}
    assert "0532 123 45 67" in writer.prompts[0] and "tr" in writer.prompts[0]
    assert outcome.cancelled and state.reports[0][:2] == (1, 2) and "left" in state.reports[0][2]

    # Stored with the recipe, the paraphrases come back without the model, their values varied consistently.
    recipe = Recipe(source="calls.jsonl", variants=2, held_out_fraction=0, paraphrases=outcome.accepted)
    save_recipe(recipe, tmp_path / "calls.grow.toml")
    again = load_recipe(tmp_path / "calls.grow.toml")
    rows = grow(again, [{"messages": first}, {"messages": second}]).train
    kept = [r for r in rows if r.variant == "p1"]
    assert kept[0].messages[0]["content"] == outcome.accepted[0].text and kept[0].paraphrased == [0]
    varied = next(r for r in rows if r.variant == "p1v1")
    new = varied.replaced["phone"][1]
    assert varied.messages[0]["content"].startswith(f"{new[:4]} {new[4:7]} {new[7:9]} {new[9:]} hattımın kapatılması")
    assert f'"phone": "{new}"' in varied.messages[1]["content"]


def test_only_a_server_on_this_machine_is_asked():
    with pytest.raises(ParaphraseError, match="not a server on this machine"):
        ServerWriter("https://api.example.com/v1")
    assert ServerWriter("http://127.0.0.1:8080").url == "http://127.0.0.1:8080"


def test_language_is_told_offline():
    """langid's model is inside the package: a process that cannot open a socket still tells Turkish."""
    code = ("import socket\n"
            "def refuse(*a, **k): raise OSError('no network in this test')\n"
            "socket.socket.connect = refuse; socket.create_connection = refuse\n"
            "from studio.core.chat.paraphrase import language\n"
            "print(language('Faturamı öğrenmek istiyorum, numaram 0532 123 45 67.'), "
            "language('I would like to know my bill, my number is 0532 123 45 67.'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.stdout.split() == ["tr", "en"], done.stderr
