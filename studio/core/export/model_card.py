"""The model card (README.md) written into every export, with an SVG loss curve.

Everything on the card is read from the run directory — run.toml and events.jsonl — so it states
what was actually trained. A merged model keeps the same facts in `finetune_studio.json`, so a
GGUF exported later from that folder still gets a full card.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

from studio.core.runs.record import SUMMARY_FILE, RunRecord

LOSS_CURVE_FILE = "loss-curve.svg"
AGREEMENT_ROW = "Agreement with the trained model"


def smoothed(values: list[float], weight: float = 0.9) -> list[float]:
    """Exponential moving average with bias correction (TensorBoard's smoothing)."""
    out, average = [], 0.0
    for i, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight**i))
    return out


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    if not math.isfinite(low) or not math.isfinite(high) or high <= low:
        return [low]
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    ticks, value = [], first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks


def loss_curve_svg(losses: list[tuple[int, float]], eval_losses: list[tuple[int, float]] = (), *,
                   width: int = 640, height: int = 320) -> str:
    """A self-contained SVG of the training loss (raw and smoothed) and eval loss over steps."""
    left, right, top, bottom = 56, 16, 28, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    points = [(s, l) for s, l in losses if math.isfinite(l)]
    evals = [(s, l) for s, l in eval_losses if math.isfinite(l)]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
             '<!-- written by Finetune Studio -->',
             f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
             f'<text x="{left}" y="18" font-size="13" fill="#222">Training loss</text>']
    if not points:
        parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" fill="#777">'
                     'no loss was logged</text></svg>')
        return "\n".join(parts)
    steps = [s for s, _ in points + evals]
    values = [l for _, l in points + evals]
    x_low, x_high = min(steps), max(steps)
    if x_high == x_low:
        x_high = x_low + 1
    y_low, y_high = min(values), max(values)
    pad = (y_high - y_low) * 0.05 or 0.5
    y_low, y_high = max(0.0, y_low - pad) if y_low >= 0 else y_low - pad, y_high + pad

    def x(step: float) -> float:
        return left + (step - x_low) / (x_high - x_low) * plot_w

    def y(value: float) -> float:
        return top + (1 - (value - y_low) / (y_high - y_low)) * plot_h

    for tick in _nice_ticks(y_low, y_high):
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
                     'stroke="#e6e6e6"/>')
        parts.append(f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end" fill="#555">{tick:g}</text>')
    for tick in _nice_ticks(x_low, x_high):
        if tick != int(tick):
            continue
        parts.append(f'<text x="{x(tick):.1f}" y="{top + plot_h + 16}" text-anchor="middle" fill="#555">'
                     f'{int(tick)}</text>')
    parts.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>')
    parts.append(f'<text x="{left + plot_w / 2}" y="{height - 6}" text-anchor="middle" fill="#333">step</text>')

    def polyline(series: list[tuple[float, float]], colour: str, stroke_width: float, extra: str = "") -> str:
        coords = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in series)
        return (f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="{stroke_width}" '
                f'stroke-linejoin="round" {extra}/>')

    parts.append(polyline(points, "#9ecae1", 1.2))
    parts.append(polyline(list(zip([s for s, _ in points], smoothed([v for _, v in points]))), "#08519c", 2.2))
    legend = [("#9ecae1", "loss"), ("#08519c", "smoothed")]
    if evals:
        parts.append(polyline(evals, "#d94801", 2.0, 'stroke-dasharray="5 3"'))
        legend.append(("#d94801", "eval loss"))
    lx = left + plot_w - 110
    for i, (colour, label) in enumerate(legend):
        ly = top + 14 + 16 * i
        parts.append(f'<line x1="{lx}" x2="{lx + 18}" y1="{ly - 4}" y2="{ly - 4}" stroke="{colour}" '
                     'stroke-width="2.5"/>')
        parts.append(f'<text x="{lx + 24}" y="{ly}" fill="#333">{html.escape(label)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


_KIND_TEXT = {
    "adapter": ("a LoRA adapter (PEFT format)", "peft"),
    "merged": ("a standalone model: the adapter merged into its base, stored in 16 bits", "transformers"),
    "gguf": ("a GGUF file for llama.cpp and Ollama", "gguf"),
}


def _usage(kind: str, files: dict[str, str]) -> str:
    base = files.get("base", "BASE_MODEL")
    if kind == "adapter":
        return ("```python\nfrom peft import PeftModel\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
                "tokenizer = AutoTokenizer.from_pretrained(\"path/to/this/folder\")\n"
                f"model = AutoModelForCausalLM.from_pretrained(\"{base}\")\n"
                "model = PeftModel.from_pretrained(model, \"path/to/this/folder\")\n```\n")
    if kind == "merged":
        return ("```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
                "tokenizer = AutoTokenizer.from_pretrained(\"path/to/this/folder\")\n"
                "model = AutoModelForCausalLM.from_pretrained(\"path/to/this/folder\")\n"
                "messages = [{\"role\": \"user\", \"content\": \"Hello\"}]\n"
                "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\", "
                "return_dict=True)\nprint(tokenizer.decode(model.generate(**inputs, max_new_tokens=128)[0]))\n```\n")
    gguf_name = files.get("gguf", "model.gguf")
    modelfile = files.get("modelfile", "Modelfile")
    return (f"llama.cpp: `llama-cli -m {gguf_name} -cnv` (the chat template is embedded in the file).\n\n"
            f"Ollama: `ollama create my-model -f {modelfile} && ollama run my-model` — `{modelfile}`, beside "
            f"`{gguf_name}`, carries the same chat template and its stop token(s).\n")


def model_card(summary: RunRecord | None, kind: str, *, files: dict[str, str] | None = None,
               notes: list[str] = (), loss_curve: str = LOSS_CURVE_FILE) -> str:
    """The README.md text of an export of `kind` ('adapter', 'merged' or 'gguf')."""
    files = dict(files or {})
    what, library = _KIND_TEXT[kind]
    s = summary or RunRecord()
    if s.base_model:
        files.setdefault("base", s.base_model_id)
    front = ["---", f"library_name: {library}"]
    if s.base_model:
        front.append(f"base_model: {json.dumps(s.base_model_id)}")
    front += ["tags:", "- finetune-studio", "- lora", "---", ""]
    lines = front + [f"# {s.run_name or 'Fine-tuned model'}", "",
                     f"This is {what}, fine-tuned with Finetune Studio.", ""]
    if summary is not None:
        lora = s.settings.get("lora", {})
        training = s.settings.get("training", {})
        rows = f" ({s.train_rows} rows)" if s.train_rows else ""
        table = [
            ("Base model", f"`{s.base_model_id}`" if s.base_model else "—"),
            ("Dataset", f"`{Path(s.dataset).name}`{rows}" if s.dataset else "—"),
            ("Method", s.method()),
            *([("Merged into", s.merged_into)] if s.merged_into and kind != "adapter" else []),
            *([(AGREEMENT_ROW, s.agreement)] if s.agreement and kind != "adapter" else []),
            ("LoRA", f"r {lora.get('r', '?')}, alpha {lora.get('lora_alpha', '?')}, dropout "
                     f"{lora.get('lora_dropout', '?')}, modules {', '.join(lora.get('target_modules', [])) or '?'}"),
            ("Training", f"learning rate {training.get('learning_rate', '?')}, batch "
                         f"{training.get('per_device_train_batch_size', '?')} × accumulation "
                         f"{training.get('gradient_accumulation_steps', '?')}, max length "
                         f"{training.get('max_length', '?')}"),
            ("Steps", f"{s.steps if s.steps is not None else '?'}" + (f" ({s.status})" if s.status else "")),
            ("Final training loss", f"{s.final_loss:.4f}" if isinstance(s.final_loss, (int, float)) else "—"),
        ]
        if s.eval_losses:
            table.append(("Final eval loss", f"{s.eval_losses[-1][1]:.4f}"))
        lines += ["## Training", "", "| | |", "| --- | --- |"]
        lines += [f"| {k} | {v} |" for k, v in table]
        lines += ["", f"![Training loss]({loss_curve})", ""]
    lines += ["## Chat template", "",
              "Prompts are rendered with the chat template the run trained with; it is saved with the "
              "tokenizer" + (" and embedded in the GGUF file" if kind == "gguf" else "") + ".", ""]
    lines += ["## Use it", "", _usage(kind, files)]
    for note in notes:
        lines += [f"> {note}", ""]
    if summary is not None and s.settings:
        import tomli_w

        lines += ["<details><summary>Full training configuration (run.toml)</summary>", "", "```toml",
                  tomli_w.dumps(s.settings).rstrip(), "```", "</details>", ""]
    return "\n".join(lines)


def write_model_card(folder: Path, summary: RunRecord | None, kind: str, *, files: dict[str, str] | None = None,
                     notes: list[str] = (), keep_summary: bool = False, name: str = "") -> Path:
    """Write README.md (and the loss curve) into `folder`; returns the README path. With `name` (a GGUF's stem)
    they are NAME.md and NAME.loss-curve.svg instead, so the cards of two GGUF files in one folder stay apart."""
    folder = Path(folder)
    readme = folder / (f"{name}.md" if name else "README.md")
    loss_curve = f"{name}.{LOSS_CURVE_FILE}" if name else LOSS_CURVE_FILE
    readme.write_text(model_card(summary, kind, files=files, notes=notes, loss_curve=loss_curve), encoding="utf-8")
    if summary is not None:
        (folder / loss_curve).write_text(loss_curve_svg(summary.losses, summary.eval_losses), encoding="utf-8")
        if keep_summary:
            (folder / SUMMARY_FILE).write_text(summary.to_json(), encoding="utf-8")
    return readme



def record_agreement(export: Path, text: str) -> Path:
    """State `text` (how the export's replies compare with the trained model's) on the export's model card, in
    the row a merge's own agreement fills (RunRecord.agreement); returns the README path.

    A merged folder keeps its facts in finetune_studio.json, so its card is written again from them (and a GGUF
    exported from it later states the same). A GGUF's card (NAME.md) has no such file beside it: its row is replaced
    in place (or added after the method), and so is the note a merge into the original weights left. Either way the
    export's record of its files (staging.record_files) is brought up to date, so the export stays replaceable.
    """
    from studio.core.export.staging import manifest_path, read_manifest, record_files

    export = Path(export)
    manifest = manifest_path(export, is_dir=export.is_dir())
    recorded = read_manifest(manifest)  # before the card changes: only the files the export wrote are recorded again
    if export.is_dir():
        summary = RunRecord.find(export)
        if summary is not None:
            summary.agreement = text
            readme = write_model_card(export, summary, "merged", keep_summary=True)
            if recorded is not None:
                record_files(export, manifest, sorted(recorded))
            return readme
        readme = export / "README.md"
    else:
        readme = export.with_suffix(".md")
    lines = readme.read_text(encoding="utf-8").splitlines()
    row = f"| {AGREEMENT_ROW} | {text.replace('|', chr(92) + '|')} |"
    rows = [i for i, line in enumerate(lines) if line.startswith(f"| {AGREEMENT_ROW} |")]
    if rows:
        lines[rows[0]] = row
    else:
        anchor = next((i for key in ("Merged into", "Method") for i, line in enumerate(lines)
                       if line.startswith(f"| {key} |")), None)
        if anchor is not None:
            lines.insert(anchor + 1, row)
        else:  # a card without the training table (an export of a folder that names no run)
            at = next((i for i, line in enumerate(lines) if line.startswith("## ")), len(lines))
            lines[at:at] = [f"> {AGREEMENT_ROW}: {text}.", ""]
    lines = [f"> {AGREEMENT_ROW}: {text}." if line.startswith(f"> {AGREEMENT_ROW}:") else line for line in lines]
    readme.write_text("\n".join(lines) + "\n", encoding="utf-8")
    if recorded is not None:
        record_files(manifest.parent, manifest, sorted(recorded))
    return readme
