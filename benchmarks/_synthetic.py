"""A synthetic chat dataset of any size, written fast and deterministically (for benchmarks and tests)."""

from __future__ import annotations

import json
import random
from pathlib import Path

_QUESTIONS = [
    "What are your support hours?", "How do I restart my modem?", "Is there an outage in İzmir right now?",
    "Can I upgrade my plan to Fiber 500?", "Why is my internet so slow in the evening?", "Where can I pay my bill?",
    "Please cancel my subscription.", "Do students get a discount?", "My Wi-Fi password is lost, what should I do?",
    "Send a technician to Beşiktaş tomorrow.",
]
_ANSWERS = [
    "Nimbus support is open every day from 08:00 to 22:00, holidays included.",
    "Unplug the modem for thirty seconds, plug it back in, and wait for the green light.",
    "Let me check the network status for you. <tool_code>check_outage({\"city\": \"Izmir\"})</tool_code>",
    "Yes, Fiber 500 costs 450 TL a month and the upgrade is free of charge.",
    "Evenings are busy; use a cable instead of Wi-Fi and restart the modem once.",
    "You can pay in the Nimbus app, at any post office, or by automatic transfer.",
    "Sorry to see you go! I have opened a cancellation request; it takes effect next month.",
    "Students get twenty percent off every plan with a valid student card.",
]


def write_chat_jsonl(path: Path, rows: int, *, seed: int = 0) -> Path:
    """`rows` OpenAI-style conversations (one to three exchanges, some with a system prompt), ~300 bytes each."""
    rng = random.Random(seed)
    path = Path(path)
    with open(path, "w", encoding="utf-8") as handle:
        chunk = []
        for i in range(rows):
            messages = [{"role": "system", "content": "You are Nimbus support."}] if i % 3 == 0 else []
            for _ in range(1 + (i % 5 == 0) + (i % 11 == 0)):
                messages.append({"role": "user", "content": f"Ticket {i}: {rng.choice(_QUESTIONS)}"})
                messages.append({"role": "assistant", "content": rng.choice(_ANSWERS)})
            chunk.append(json.dumps({"messages": messages}, ensure_ascii=False))
            if len(chunk) == 10_000:
                handle.write("\n".join(chunk) + "\n")
                chunk = []
        if chunk:
            handle.write("\n".join(chunk) + "\n")
    return path
