"""`finetune-studio`: no arguments opens the window; subcommands run headless.

Exit status: 0 done; 2 bad input (message on stderr naming the file, line or key); 1 internal failure.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Sequence

from studio.core.system.library_output import hide_weight_loading_bars, silence_known_library_warnings
from studio.core.system.tasks import Task
from studio.core.train.child import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_OK

EXIT_BROKEN_EXPORT = 3
"""`--verify` ran and found the export answering worse than the trained model: the file stands, the verdict is
printed and recorded, and a script can tell it from a good export without reading it."""


class BadInput(Exception):
    """A user error: printed as one clear line, exit status 2 (and, under --json, as a JSON document unless the
    command has already printed one)."""

    def __init__(self, message: str, *, json_printed: bool = False):
        super().__init__(message)
        self.json_printed = json_printed


def _command_name(args: argparse.Namespace) -> str:
    """'finetune-studio data inspect', 'finetune-studio export gguf', … for messages."""
    words = ["finetune-studio", args.command]
    words += [w for w in (getattr(args, "data_command", None), getattr(args, "export_command", None)) if w]
    return " ".join(words)


def build_parser() -> argparse.ArgumentParser:
    from studio.core.config.settings import TrainingSettings
    from studio.core.export.gguf import AUTO, DEFAULT_GGUF_TYPE, GGUF_TYPES

    parser = argparse.ArgumentParser(prog="finetune-studio",
                                     description="Point-and-click LoRA/QLoRA fine-tuning. No command opens the window.")
    from studio import __version__

    parser.add_argument("--version", action="version", version=f"finetune-studio {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="build the offline demo model, dataset and config")
    demo.add_argument("--output", type=Path, help="folder to build into (default: the user data folder)")
    demo.add_argument("--force", action="store_true", help="rebuild even if the demo exists")

    train = sub.add_parser("train", help="train headless (the same code path as the window)")
    train.add_argument("config", type=Path, metavar="CONFIG.toml")
    train.add_argument("--model", help="override model.name_or_path")
    train.add_argument("--data", help="override data.train_file")
    train.add_argument("--output", type=Path, help="run directory (default: a new folder under the runs folder)")
    train.add_argument("--name", help="the run's name, its folder under the runs folder (default: the config's name; "
                                      "with --data or --model, or no name in the config, the data's and the model's "
                                      "names); a name in use gets a suffix (-2), and the run says so")
    train.add_argument("--max-steps", type=int, help="override training.max_steps")
    train.add_argument("--skip-bad-rows", action="store_true",
                       help="train on the good rows of data with bad ones, each skipped row listed in train.log "
                            "(data.skip_bad_rows; default: bad rows stop the run before it starts)")
    train.add_argument("--encoding", help="text encoding of the data files, e.g. cp1254 (override data.encoding)")
    train.add_argument("--resume", nargs="?", const="latest", metavar="CKPT",
                       help="continue from a checkpoint folder (no value: the run's latest checkpoint); a run "
                            "already complete is left as it is (exit 0) unless --max-steps raises its end")
    train.add_argument("--allow-pickle", action="store_true",
                       help="set model.allow_pickle: load pickle weights (pytorch_model.bin) when the model has no "
                            ".safetensors — a pickle can run code, so only for files you trust")

    chat = sub.add_parser("chat", help="talk to a model, optionally with adapters")
    chat.add_argument("--model", required=True, help="base model folder or Hub id, or a run directory")
    chat.add_argument("--adapter", action="append", default=[], help="adapter folder (repeatable)")
    chat.add_argument("--prompt", help="one-shot prompt; without it, an interactive session")
    chat.add_argument("--system", help="system prompt (as the Chat tab's); without it the chat template's own "
                                       "default, if it has one")
    _add_generation_arguments(chat)
    chat.add_argument("--load-in-4bit", action="store_true",
                      help="load the base in 4-bit NF4 (a run trained on a 4-bit base is loaded so anyway)")
    _add_weights_arguments(chat, verb="chat with")

    estimate = sub.add_parser("estimate", help="estimate the GPU memory a config needs, with its breakdown")
    estimate.add_argument("config", type=Path, metavar="CONFIG.toml")
    estimate.add_argument("--model", help="override model.name_or_path: a model folder, a Hub id in the HF cache, "
                                           "or a bundled shape such as llama-3.1-8b")
    estimate.add_argument("--gpu-memory", metavar="SIZE",
                          help="compare with this much free GPU memory, e.g. 8GiB (default: the detected GPU's)")
    estimate.add_argument("--json", action="store_true", help="print one JSON document")

    merge = sub.add_parser("merge", help="merge an adapter into its base model (16-bit)")
    merge.add_argument("adapter", type=Path, metavar="RUN_DIR_OR_ADAPTER")
    merge.add_argument("--output", type=Path, required=True, metavar="DIR",
                       help="the merged model's folder: a new or empty one (never a run folder), or with --overwrite "
                            "an unchanged earlier export to replace")
    merge.add_argument("--base", help="base model (default: the one recorded in the adapter)")
    _add_weights_arguments(merge, verb="merge into")
    merge.add_argument("--verify", type=int, metavar="N",
                       help="compare the merged model's greedy replies with the trained model's on N of the run's "
                            "examples and state the result on the model card (default: 8 with --base-weights "
                            "original on a 4-bit run, else 0)")
    _add_overwrite_argument(merge)

    convert = sub.add_parser("convert", help="a safetensors copy of a model or adapter folder holding pickle weights")
    convert.add_argument("folder", type=Path, metavar="MODEL_DIR", help="a model folder (config.json) or adapter "
                                                                        "folder whose weights are .bin/.pt pickles")
    convert.add_argument("--output", type=Path, metavar="DIR",
                         help="the new folder to write (default: MODEL_DIR-safetensors beside it); never an existing one")
    convert.add_argument("--allow-pickle", action="store_true",
                         help="required: converting reads the pickle files (with torch's weights-only loader), and a "
                              "pickle can run code — only for files you trust")
    convert.add_argument("--trust-remote-code", action="store_true",
                         help="allow a model that needs its own Python code to load")

    export = sub.add_parser("export", help="export a trained model: GGUF + Ollama Modelfile, or the adapter")
    export_sub = export.add_subparsers(dest="export_command", metavar="KIND", required=True)
    gguf = export_sub.add_parser("gguf", help="one GGUF file for llama.cpp and Ollama, with a Modelfile and model card")
    gguf.add_argument("model", type=Path, metavar="MODEL_DIR",
                      help="a merged model folder, or a run directory / adapter (merged first into a temporary folder)")
    gguf.add_argument("--output", type=Path, required=True, metavar="FILE.gguf",
                      help="the .gguf file to write, a new one (never inside a run folder); NAME.Modelfile and "
                           "the model card NAME.md go beside it, so other files in that folder are left alone")
    gguf.add_argument("--type", dest="gguf_type", choices=(AUTO, *GGUF_TYPES), default=DEFAULT_GGUF_TYPE,
                      help=f"weight type (default: {DEFAULT_GGUF_TYPE}: the best-quality type whose weights, KV cache "
                           "and compute buffer fit this machine's card, or its RAM, at --context; the Export dialog's "
                           "preselection too). q6_k, q5_k_m and q4_k_m are made by llama.cpp's quantizer (the "
                           "llama-cpp extra, or llama-quantize on PATH)")
    gguf.add_argument("--context", type=int, default=None, metavar="TOKENS",
                      help="the context the type is sized for and the Modelfile's PARAMETER num_ctx (default: twice "
                           "the run's max_length, at least 2048)")
    _add_weights_arguments(gguf, verb="merge into")
    gguf.add_argument("--llama-quantize", type=Path, metavar="PROGRAM",
                      help="a llama-quantize program for the K-quants where llama-cpp-python is not installed; "
                           "remembered for later exports and the Export dialog")
    gguf.add_argument("--verify", action="store_true",
                      help="then answer the run's examples with the studio's model and with the GGUF file (llama.cpp "
                           "where llama-cpp-python is installed), compare the replies and state the result on the "
                           "model card; exit 3 when the verdict is a broken export")
    _add_overwrite_argument(gguf)
    ollama = export_sub.add_parser("ollama", help="put an exported GGUF into Ollama: ollama create NAME -f "
                                                  "NAME.Modelfile (Ollama must be installed)")
    ollama.add_argument("modelfile", type=Path, metavar="NAME.Modelfile",
                        help="the Modelfile an `export gguf` wrote beside its .gguf file")
    ollama.add_argument("--name", required=True, help="the model's name in Ollama (e.g. support-bot)")
    ollama.add_argument("--replace", action="store_true",
                        help="replace a model of that name already in `ollama list` (otherwise refused)")
    ollama.add_argument("--verify", type=Path, metavar="RUN_DIR",
                        help="then answer the run's examples with the studio's model and with the model in Ollama "
                             "(its chat API on this machine) and compare the replies; exit 3 when the verdict is a "
                             "broken export")
    ollama.add_argument("--host", default="", help="Ollama's address (default: $OLLAMA_HOST, else http://127.0.0.1:11434)")
    adapter_export = export_sub.add_parser("adapter", help="the adapter folder (PEFT format) with a model card")
    adapter_export.add_argument("source", type=Path, metavar="RUN_DIR_OR_ADAPTER")
    adapter_export.add_argument("--output", type=Path, required=True, metavar="DIR_OR_ZIP",
                                help="the folder to write (a new or empty one, never a run folder), or the .zip "
                                     "file with --zip")
    adapter_export.add_argument("--zip", action="store_true", help="write a .zip file instead of a folder")
    _add_overwrite_argument(adapter_export)

    data = sub.add_parser("data", help="inspect a dataset the way training reads it")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    inspect = data_sub.add_parser("inspect", help="detected format, counts, errors with line numbers, token stats")
    inspect.add_argument("file", metavar="FILE", help="a data file, a saved dataset folder or a Hub dataset id")
    inspect.add_argument("--model", help="a model folder or Hub id whose tokenizer and chat template count tokens "
                                         "(default: the --config's model)")
    inspect.add_argument("--config", type=Path, metavar="CONFIG.toml",
                         help="read the data as this run config would: its model, max_length, responses-only "
                              "setting, format, column mapping, encoding and split (an option given here wins)")
    inspect.add_argument("--json", action="store_true", help="print one JSON document")
    inspect.add_argument("--format", help="record shape (default: detected)")
    inspect.add_argument("--columns", help="column mapping as field=column pairs, e.g. prompt=question,completion=answer")
    inspect.add_argument("--encoding", help="text encoding (default: utf-8)")
    inspect.add_argument("--split", help="split of a Hub dataset or DatasetDict folder (default: train)")
    inspect.add_argument("--text-split", choices=("blank_lines", "file"),
                         help="how a .txt/.md file is cut into documents: at blank lines (the default), or one "
                              "document per file (data.text_split)")
    inspect.add_argument("--max-length", type=int,
                         help=f"max_length for the truncation count (default: the config's, else "
                              f"{TrainingSettings().max_length}, a new run's)")
    inspect.add_argument("--all-tokens", action="store_true", help="count prompts as trained (default: responses "
                                                                   "only, unless the config trains on all tokens)")
    inspect.add_argument("--sample", type=int, metavar="N", help="count tokens on N random rows (default: all)")
    grow = data_sub.add_parser("grow", help="grow a small tool-call dataset by its recipe: value variants and kept "
                                            "paraphrases, the held-out originals apart (writes X.grown.jsonl, "
                                            "X.held-out.jsonl and the record X.grown.toml beside the recipe)")
    grow.add_argument("recipe", metavar="RECIPE.toml", type=Path, help="a grow recipe (the Dataset tab's Grow "
                                                                       "panel saves one)")

    evaluate = sub.add_parser("eval", help="score a run (and the base) on held-out examples: exact, tool calls, ...")
    evaluate.add_argument("model", metavar="RUN_OR_ADAPTER", help="a run directory or adapter folder (or a model, "
                                                                 "evaluated alone)")
    evaluate.add_argument("--data", help="eval set: a data file, saved dataset folder or Hub id (default: the run's "
                                         "held-out split)")
    evaluate.add_argument("--metric", action="append", default=[], metavar="NAMES",
                          help="comma-separated metrics: exact, normalised, normalised_tr, contains, regex, tool_call, "
                               "chrf (default: exact,normalised,tool_call,chrf)")
    evaluate.add_argument("--pattern", metavar="REGEX", help="the regex metric's pattern (implies --metric regex)")
    evaluate.add_argument("--base", action="store_true", help="also score the base model alone (adapter disabled)")
    evaluate.add_argument("--adapter", action="append", default=[], help="another run or adapter on the same base, "
                                                                         "as one more column (repeatable)")
    evaluate.add_argument("--name", help="the eval's folder under <run>/evals, a plain folder name (default: the eval "
                                         "set's name); the same name and settings resume an interrupted eval, other "
                                         "settings (max new tokens, data, models) go to NAME-2")
    evaluate.add_argument("--output", type=Path, metavar="DIR", help="write results here instead")
    evaluate.add_argument("--last-turn", action="store_true", help="score only each conversation's last assistant "
                                                                   "turn (default: every assistant turn)")
    evaluate.add_argument("--max-new-tokens", type=int, default=256, help="longest reply; a longer one is cut and "
                                                                          "marked; at most the model's context less "
                                                                          "the prompt (default: 256)")
    evaluate.add_argument("--batch-size", type=int, help="replies generated together (default: fitted to memory)")
    evaluate.add_argument("--fresh", action="store_true", help="generate every reply again in the eval's folder "
                                                               "instead of resuming its results")
    evaluate.add_argument("--gguf", type=Path, metavar="FILE",
                          help="also score an exported GGUF file, read back by transformers (its weights and chat "
                               "template, not llama.cpp's inference), and count its replies equal to the run's")
    evaluate.add_argument("--json", action="store_true", help="print the summary as one JSON document")
    _add_weights_arguments(evaluate, verb="evaluate on")

    doctor = sub.add_parser("doctor", help="what will go wrong on this machine before the first run, with the fix "
                                           "(exit 2 when a check fails)")
    doctor.add_argument("config", type=Path, nargs="?", metavar="CONFIG.toml",
                        help="the run to check memory and disk for (default: the window's saved settings)")
    doctor.add_argument("--model", help="check for this model instead of the config's")
    doctor.add_argument("--json", action="store_true", help="print the findings and facts as one JSON document")
    doctor.add_argument("--report", action="store_true", help="the diagnostics to paste into a bug report (home "
                                                              "folder and user name replaced, no token)")
    return parser


def _add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    """The Chat tab's generation settings (chat.GenerationSettings), with the same defaults."""
    from studio.core.chat.model import GenerationSettings

    d = GenerationSettings()
    parser.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens,
                        help=f"longest reply, in tokens (default: {d.max_new_tokens})")
    parser.add_argument("--temperature", type=float, default=d.temperature,
                        help="sampling temperature; 0 is greedy, the same reply every time (default: 0)")
    parser.add_argument("--top-p", type=float, default=d.top_p, help="nucleus sampling when temperature > 0 "
                                                                     f"(default: {d.top_p})")
    parser.add_argument("--top-k", type=int, default=d.top_k, help="top-k sampling when temperature > 0; 0 is off")
    parser.add_argument("--repetition-penalty", type=float, default=d.repetition_penalty,
                        help=f"above 1 discourages repeats (default: {d.repetition_penalty})")
    parser.add_argument("--seed", type=int, help="random seed for sampled replies")


def _add_overwrite_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier export at --output, if it holds nothing but the files that export "
                             "wrote, unchanged (anything else there is refused, never deleted)")


def _add_weights_arguments(parser: argparse.ArgumentParser, *, verb: str) -> None:
    parser.add_argument("--base-weights", choices=("trained", "original"), default="trained",
                        help=f"base weights to {verb}: 'trained' (default) uses the weights the adapter was trained "
                             "on — for a QLoRA run the 4-bit base — so it answers like the trained model; "
                             "'original' uses the original 16-bit weights, which a 4-bit-trained adapter does not "
                             "know")
    parser.add_argument("--trust-remote-code", action="store_true", default=None,
                        help="allow a model that needs its own Python code (default: what the run allowed, else no)")
    parser.add_argument("--allow-pickle", action="store_true", default=None,
                        help="load pickle weights (pytorch_model.bin, adapter_model.bin) where a folder has no "
                             ".safetensors — a pickle can run code, so only for files you trust; better, convert them "
                             "once with `finetune-studio convert` (default: what the run allowed, else no)")


def main(argv: Sequence[str] | None = None) -> int:
    silence_known_library_warnings()
    args = build_parser().parse_args(argv)
    if args.command is None:
        from studio.ui.app import run_app

        return run_app()
    if args.command in ("train", "chat", "merge", "eval", "convert"):  # the commands that load a model (exports quiet their own)
        hide_weight_loading_bars()
    handler = {"demo": cmd_demo, "train": cmd_train, "chat": cmd_chat, "merge": cmd_merge,
               "estimate": cmd_estimate, "data": cmd_data, "export": cmd_export, "eval": cmd_eval,
               "convert": cmd_convert, "doctor": cmd_doctor}[args.command]
    try:
        return handler(args)
    except BadInput as error:
        if getattr(args, "json", False) and not error.json_printed:
            print(json.dumps({"ok": False, "error": str(error)}, indent=2))
        print(f"{_command_name(args)}: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERNAL


def cmd_demo(args: argparse.Namespace) -> int:
    from studio.core.system.demo import build_demo
    from studio.core.config.presets import write_demo_config

    assets = build_demo(args.output, force=args.force, progress=lambda m: print(m, file=sys.stderr))
    write_demo_config(assets)
    print(f"model:   {assets.model_dir}\ndataset: {assets.dataset_path}\nconfig:  {assets.config_path}")
    print(f"train it: finetune-studio train {assets.config_path}", file=sys.stderr)
    return EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    from studio.core.train.child import TrainInputError, train_child

    try:
        return train_child(args.config, model=args.model, data=args.data, output=args.output,
                           max_steps=args.max_steps, resume=args.resume, allow_pickle=args.allow_pickle,
                           skip_bad_rows=args.skip_bad_rows, encoding=args.encoding, name=args.name)
    except TrainInputError as error:
        raise BadInput(str(error)) from None


CHAT_HELP = "Type a message and press Enter. /clear starts a new conversation, /exit (or Ctrl-D) ends, /help shows this."


def cmd_chat(args: argparse.Namespace) -> int:
    from studio.core.chat.model import ChatModel, GenerationSettings
    from studio.core.models.source import ModelLoadError

    try:
        model = ChatModel.load(args.model, adapters=args.adapter, load_in_4bit=args.load_in_4bit,
                               weights=args.base_weights, trust_remote_code=args.trust_remote_code,
                               allow_pickle=args.allow_pickle)
    except ModelLoadError as error:
        raise BadInput(str(error)) from None
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                                  top_k=args.top_k, repetition_penalty=args.repetition_penalty, seed=args.seed)
    start: list[dict[str, str]] = [{"role": "system", "content": args.system}] if args.system else []
    history = list(start)
    interactive = args.prompt is None
    for note in model.notes:
        print(f"note: {note}", file=sys.stderr)
    # Which base weights answer (a QLoRA adapter on its 4-bit base, or the original 16-bit weights), one-shot too:
    # on stderr, so a one-shot's stdout stays the reply alone.
    adapters = ", ".join(model.adapters) or "no adapter"
    print(f"{model.base_name} ({model.loaded_as}) with {adapters}.", file=sys.stderr)
    if interactive:
        print(CHAT_HELP, file=sys.stderr)
    prompts = [args.prompt] if not interactive else None
    while True:
        if prompts is not None:
            if not prompts:
                return EXIT_OK
            prompt = prompts.pop()
        else:
            try:
                prompt = input("you> ")
            except EOFError:
                print(file=sys.stderr)
                return EXIT_OK
            command = prompt.strip().lower()
            if not command:
                continue
            if command in ("/exit", "/quit"):
                return EXIT_OK
            if command == "/clear":
                history = list(start)
                print("(new conversation)", file=sys.stderr)
                continue
            if command in ("/help", "/?"):
                print(CHAT_HELP, file=sys.stderr)
                continue
        history.append({"role": "user", "content": prompt})
        reply = []
        for piece in model.stream_reply(history, settings):
            reply.append(piece)
            print(piece, end="", flush=True)
        print()
        history.append({"role": "assistant", "content": "".join(reply)})


def _config_without_data(path: Path, model: str | None) -> Any:
    """The config as `train` would read it, except that no training data is needed (an estimate, a data
    inspection of another file)."""
    from studio.core.config.settings import ConfigError, from_dict, read_toml, resolve_relative_paths

    try:
        data = read_toml(path)
        if isinstance(data.get("data", {}), dict):
            data.setdefault("data", {}).setdefault("train_file", "(not needed here)")
        if model and isinstance(data.get("model", {}), dict):
            data.setdefault("model", {})["name_or_path"] = model
        config = from_dict(data, source=path)
    except ConfigError as error:
        raise BadInput(str(error)) from None
    resolve_relative_paths(config, path.parent)
    if model and Path(model).exists():  # a folder given on the command line is relative to the working directory
        config.model.name_or_path = str(Path(model).resolve())
    return config


def _parse_size(text: str) -> int:
    import re

    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(gib|gb|g|mib|mb|m)?\s*", text.lower())
    if not match:
        raise BadInput(f"--gpu-memory {text!r}: expected a size such as 8GiB or 7600MiB")
    value, unit = float(match.group(1)), match.group(2) or "gib"
    return int(value * (1024**2 if unit.startswith("m") else 1024**3))


def cmd_doctor(args: argparse.Namespace) -> int:
    from studio.core.sessions.doctor import diagnostics_report, examine, format_checks
    from studio.core.system.paths import user_data_dir
    from studio.ui.display_check import display_problem  # imports no Qt: the window's own start-up check

    config_path = args.config or user_data_dir() / "last-config.toml"  # the window's saved settings
    if args.config or config_path.is_file():
        config = _config_without_data(config_path, args.model)
    elif args.model:
        from studio.core.config.settings import RunConfig

        config = RunConfig()  # the documented defaults, for this model
        config.model.name_or_path = args.model
    else:
        config = None
    report = examine(config, display=display_problem())
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    elif args.report:
        print(diagnostics_report(report))
    else:
        print(format_checks(report.checks))
        print(f"overall: {report.level}" + (f" (checked for {report.needs.model})" if report.needs.model else ""))
    return EXIT_BAD_INPUT if report.level == "fail" else EXIT_OK


def cmd_estimate(args: argparse.Namespace) -> int:
    from studio.core.system.gpu import detect_gpu
    from studio.core.models.source import ModelSourceError, find_model_config
    from studio.core.config.presets import GPU_PRESETS
    from studio.core.plan.vram import ModelShape, ShapeError, estimate_vram
    from studio.core.system.units import format_bytes

    config = _config_without_data(args.config, args.model)
    try:
        source = find_model_config(config.model.name_or_path)
        shape = ModelShape.from_config(source.config, source.name)
    except (ModelSourceError, ShapeError) as error:
        raise BadInput(f"{args.config}: model.name_or_path = {config.model.name_or_path!r}: {error}") from None
    estimate = estimate_vram(shape, config)

    if args.gpu_memory:
        free, against = _parse_size(args.gpu_memory), f"--gpu-memory {args.gpu_memory}"
    elif (gpu := detect_gpu()) is not None:
        free, against = gpu.free_bytes, f"free memory of {gpu.name}"
    else:
        target = GPU_PRESETS[0]
        free, against = target.vram_bytes, f"no NVIDIA GPU detected: the {target.label.split(' —')[0]} preset's card"
    if args.json:
        document = estimate.to_dict(free)
        document.update(config=str(args.config), model_source=source.description, compared_with=against)
        print(json.dumps(document, indent=2))
        return EXIT_OK
    s = estimate.settings
    count = s["parameters"]
    print(f"VRAM estimate for {_model_title(source)}, "
          + (f"{count / 1e9:.2f}B" if count >= 1e9 else f"{count / 1e6:.1f}M") + " parameters")
    print(f"  model shape: {source.description}")
    print(f"  settings: {s['quantization']}, r {s['r']}, max_length {s['max_length']} x batch "
          f"{s['per_device_train_batch_size']}, gradient checkpointing {'on' if s['gradient_checkpointing'] else 'off'}, "
          f"{s['optim']}")
    print(f"  adapted layers: {', '.join(s['target_modules']) or 'none'} "
          f"({s['lora_parameters'] / 1e6:.1f}M LoRA parameters)")
    print(estimate.format_table())
    print(f"verdict: {estimate.verdict(free)} ({format_bytes(estimate.total, style='estimate')} of {format_bytes(free, style='estimate')}; {against})")
    for note in estimate.notes:
        print(f"note: {note}")
    return EXIT_OK


# Folder names that say where a model is, not which model it is ("VRAM estimate for model" named nothing).
_GENERIC_FOLDERS = re.compile(r"models?|merged|base|adapter|outputs?|final|weights|hf|checkpoint(-\d+)?|snapshots?"
                              r"|[0-9a-f]{40}", re.IGNORECASE)


def _model_title(source: Any) -> str:
    """The model's name for `estimate`'s title: a Hub id from the cache (or a cache path), the folder's own name,
    the Hub id config.json recorded (`_name_or_path`), else its architecture."""
    if source.origin != "folder":
        return source.name  # the Hub id as given, or a bundled shape's name
    folder = source.path.parent
    parts = folder.parts
    for index, part in enumerate(parts[:-1]):
        if part.startswith("models--") and parts[index + 1] == "snapshots":
            return part.removeprefix("models--").replace("--", "/", 1)  # the cache's own spelling of org/name
    if not _GENERIC_FOLDERS.fullmatch(folder.name):
        return folder.name
    recorded = str(source.config.get("_name_or_path") or "").strip().rstrip("/\\")
    recorded_name = Path(recorded).name if recorded else ""
    if recorded_name and not _GENERIC_FOLDERS.fullmatch(recorded_name):
        # A Hub id is kept whole; of a path on whoever saved it, only its last part means anything here.
        return recorded if recorded.count("/") == 1 and not Path(recorded).is_absolute() else recorded_name
    model_type = source.config.get("model_type") or "unknown"
    return f"the {model_type} model in {folder}"


def cmd_merge(args: argparse.Namespace) -> int:
    from studio.core.models.source import ModelLoadError
    from studio.core.export.staging import ExportError
    from studio.core.export.merge import merge_adapter

    try:
        out = merge_adapter(args.adapter, args.output, base=args.base, weights=args.base_weights, verify=args.verify,
                            overwrite=args.overwrite, trust_remote_code=args.trust_remote_code,
                            allow_pickle=args.allow_pickle,
                            task=Task(progress=lambda fraction, message: print(message, file=sys.stderr)))
    except (ModelLoadError, ExportError) as error:
        raise BadInput(str(error)) from None
    print(out)
    return EXIT_OK


def cmd_convert(args: argparse.Namespace) -> int:
    from studio.core.models.convert import convert_to_safetensors
    from studio.core.models.source import ModelLoadError

    try:
        out = convert_to_safetensors(args.folder, args.output, allow_pickle=args.allow_pickle,
                                     trust_remote_code=args.trust_remote_code,
                                     progress=lambda m: print(m, file=sys.stderr))
    except ModelLoadError as error:
        raise BadInput(str(error)) from None
    print(out)
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from studio.core.models.source import ModelLoadError
    from studio.core.export.staging import ExportError

    last: list[str] = []

    def progress(fraction: float, message: str) -> None:
        if not last or last[-1] != message:
            last.append(message)
            print(f"[{fraction:4.0%}] {message}", file=sys.stderr, flush=True)

    try:
        if args.export_command == "gguf":
            from studio.core.eval.verify import ExportCheckError, ExportCheckFailed, check_verifiable
            from studio.core.export.gguf import export_gguf
            from studio.core.export.jobs import verify_export

            if args.llama_quantize is not None:
                from studio.core.system.tools import LLAMA_QUANTIZE, ToolError, remember_tool

                try:
                    remember_tool(LLAMA_QUANTIZE, args.llama_quantize)
                except ToolError as error:
                    raise BadInput(f"--llama-quantize: {error}") from None
            try:
                if args.verify:  # before minutes of export: a merged folder has no adapter to answer as the studio
                    check_verifiable(args.model)
                result = export_gguf(args.model, args.output, gguf_type=args.gguf_type, weights=args.base_weights,
                                     trust_remote_code=args.trust_remote_code, overwrite=args.overwrite,
                                     allow_pickle=args.allow_pickle, context=args.context, task=Task(progress))
                for note in result.notes:
                    print(f"note: {note}", file=sys.stderr)
                print(result.path)
                print(result.modelfile)
                if args.verify:
                    try:
                        checked = verify_export(args.model, result.path, task=Task(progress))
                    except ExportCheckFailed as error:  # the export stands; the check could not run, so no score
                        print(f"{_command_name(args)}: --verify could not run: {error}", file=sys.stderr)
                        return EXIT_INTERNAL
                    print(f"verify: {checked.text()}")
                    if not checked.passes:
                        return EXIT_BROKEN_EXPORT
            except ExportCheckError as error:
                raise BadInput(f"--verify: {error}") from None
        elif args.export_command == "ollama":
            from studio.core.export.ollama_server import OllamaError, create_in_ollama

            if not args.modelfile.is_file():
                raise BadInput(f"{args.modelfile}: no such Modelfile (an `export gguf` writes NAME.Modelfile)")
            if args.verify is not None:  # before the copy into Ollama: a run the check cannot use is bad input
                from studio.core.eval.verify import ExportCheckError, check_verifiable

                try:
                    check_verifiable(args.verify)
                except ExportCheckError as error:
                    raise BadInput(f"--verify: {error}") from None
            try:
                print(create_in_ollama(args.name, args.modelfile, replace=args.replace))
            except OllamaError as error:
                raise BadInput(str(error)) from None
            if args.verify is not None:
                return _verify_in_ollama(args)
        else:
            from studio.core.export.adapter import export_adapter, export_adapter_zip

            export = export_adapter_zip if args.zip else export_adapter
            print(export(args.source, args.output, overwrite=args.overwrite, task=Task(progress)))
    except (ModelLoadError, ExportError) as error:
        raise BadInput(str(error)) from None
    return EXIT_OK


def _verify_in_ollama(args: argparse.Namespace) -> int:
    """`export ollama --verify RUN`: the run's cases answered by the model just created in Ollama, compared with the
    studio's replies. A check that could not run prints why and no score (exit 1)."""
    import re

    from studio.core.eval.verify import ExportCheckError, ExportCheckFailed, run_check
    from studio.core.system.tasks import Task

    source = re.search(r"^FROM\s+(\S+)", args.modelfile.read_text(encoding="utf-8"), re.MULTILINE)
    gguf = (args.modelfile.parent / source.group(1)).resolve() if source else None
    if gguf is None or not gguf.is_file():
        raise BadInput(f"{args.modelfile}: its FROM names no GGUF file beside it")
    try:
        checked = run_check(args.verify, gguf, engine="ollama", ollama_model=args.name, ollama_host=args.host,
                            task=Task(lambda done, total, message: print(f"[{done}/{total}] {message}",
                                                                        file=sys.stderr, flush=True)))
    except ExportCheckFailed as error:
        print(f"{_command_name(args)}: --verify could not run: {error}", file=sys.stderr)
        return EXIT_INTERNAL
    except ExportCheckError as error:
        raise BadInput(f"--verify: {error}") from None
    print(f"verify: {checked.text()}")
    return EXIT_OK if checked.passes else EXIT_BROKEN_EXPORT


def cmd_data(args: argparse.Namespace) -> int:
    if args.data_command == "grow":
        return cmd_data_grow(args)
    from studio.core.train.prepare import load_tokenizer
    from studio.core.data.stats import format_report, inspection_report, measure_tokens
    from studio.core.data.issues import DataError
    from studio.core.data.loading import load_data
    from studio.core.models.source import missing_local_model

    from studio.core.config.settings import DataSettings, TrainingSettings

    name = _command_name(args)
    config = _config_without_data(args.config, None) if args.config is not None else None
    reading = config.data if config is not None else DataSettings()
    columns = ([part.strip() for part in args.columns.split(",") if part.strip()] if args.columns
               else list(reading.column_mapping) or None)
    model = args.model or (config.model.name_or_path if config is not None else None)
    # The config's opt-in to a model's own code holds for the config's model only.
    trust_remote_code = bool(config is not None and not args.model and config.model.trust_remote_code)
    max_length = args.max_length or (config.training if config is not None else TrainingSettings()).max_length
    responses_only = not args.all_tokens and reading.train_on_responses_only
    from studio.core.methods.registry import default_method, method as method_spec

    method = config.training.method if config is not None else default_method()
    try:
        if not method_spec(method).reads_own_records:
            data = load_data(args.file, args.format or reading.format, mapping=columns,
                             encoding=args.encoding or reading.encoding, split=args.split or reading.split,
                             text_split=args.text_split or reading.text_split)
        else:  # read as that run reads it: the method's own reader decides the shape, as train and the Dataset tab
            from studio.core.methods.reading import load_preference_data

            encoding = args.encoding or reading.encoding
            data = load_preference_data(args.file, method, mapping=columns, encoding=encoding,
                                        split=args.split or reading.split).as_loaded_data(encoding)
    except DataError as error:
        if args.json:
            print(json.dumps({"path": str(args.file), "ok": False, "error": str(error),
                              "suggested_encoding": getattr(error.encoding_guess, "encoding", None)}, indent=2))
        raise BadInput(str(error), json_printed=True) from None
    stats = None
    model_key = "--model" if args.model else f"{args.config}: model.name_or_path ="
    if model and (reason := missing_local_model(model)) is not None:
        raise BadInput(f"{model_key} {model}: {reason}")
    # TRL's trainers tokenise the data of a method with records of its own
    if model and len(data.examples) and not method_spec(method).reads_own_records:
        try:
            tokenizer = load_tokenizer(model, trust_remote_code=trust_remote_code)
        except Exception as error:  # a wrong path or an unreachable Hub id
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise BadInput(f"{model_key} {model}: its tokenizer cannot be loaded: {reason}") from None
        stats = measure_tokens(tokenizer, data, train_on_responses_only=responses_only,
                               max_length=max_length, limit=args.sample)
    report = inspection_report(data, stats, model=model)
    report["method"] = method
    report["ok"] = bool(data.format) and len(data.examples) > 0 and not data.issues
    print(json.dumps(report, indent=2, ensure_ascii=False) if args.json else format_report(report))
    if data.issues:
        # The report on stdout lists each bad row; stderr gets one line saying so, which names where the first is
        # (printing every error on both streams showed each twice in a terminal).
        first = data.issues[0]
        where = f"row {first.line}" if first.unit == "row" else f"line {first.line}"
        rows = f"{data.issue_count:,} bad row" + ("s" if data.issue_count > 1 else "")
        listed = "in the JSON document" if args.json else "above"
        print(f"{name}: {data.path}: {rows}, the first at {where} (listed {listed})", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not len(data.examples):
        print(f"{name}: {data.path}: no examples", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK


def cmd_data_grow(args: argparse.Namespace) -> int:
    from studio.core.data.grow.record import grow_recipe
    from studio.core.data.issues import DataError

    try:
        grown, outputs = grow_recipe(args.recipe)
    except DataError as error:
        raise BadInput(str(error).splitlines()[0]) from None
    generated = sum(row.generated for row in grown.train)
    print(f"{outputs.train}: {len(grown.train)} training rows ({generated} generated)\n"
          f"{outputs.held_out}: {len(grown.held_out)} held-out originals (nothing grown from them)\n"
          f"{outputs.record}: the record (recipe, held-out hashes, sha256 of both files)\n"
          f"train with data.train_file = \"{outputs.train}\" and data.eval_file = \"{outputs.held_out}\"")
    for line in grown.problems:
        print(f"not varied: {line}", file=sys.stderr)
    return EXIT_OK


def cmd_eval(args: argparse.Namespace) -> int:
    from studio.core.eval.command import build_job, format_summary
    from studio.core.eval.runner import EvalError, run_eval
    from studio.core.models.source import ModelLoadError

    try:
        job = build_job(args.model, data=args.data, metrics=args.metric, pattern=args.pattern, base=args.base,
                        adapters=args.adapter, name=args.name, output=args.output, last_turn=args.last_turn,
                        gguf=args.gguf, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                        fresh=args.fresh, weights=args.base_weights, trust_remote_code=args.trust_remote_code,
                        allow_pickle=args.allow_pickle)
        outcome = run_eval(job, task=Task(lambda done, total, message: print(
            f"[{done / total if total else 0:4.0%}] {message}", file=sys.stderr, flush=True)))
    except (EvalError, ModelLoadError) as error:  # bad input, a busy run or folder, a full disk: one line
        raise BadInput(str(error)) from None
    print(json.dumps(outcome.summary, indent=2, ensure_ascii=False) if args.json else format_summary(outcome))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
