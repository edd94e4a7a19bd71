"""`finetune-studio`: no arguments opens the window; subcommands run headless.

Exit status: 0 done; 2 bad input (message on stderr naming the file, line or key); 1 internal failure.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any, Sequence

EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT = 0, 1, 2


class BadInput(Exception):
    """A user error: printed as one clear line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="finetune-studio",
                                     description="Point-and-click LoRA/QLoRA fine-tuning. No command opens the window.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="build the offline demo model, dataset and config")
    demo.add_argument("--output", type=Path, help="folder to build into (default: the user data folder)")
    demo.add_argument("--force", action="store_true", help="rebuild even if the demo exists")

    train = sub.add_parser("train", help="train headless (the same code path as the window)")
    train.add_argument("config", type=Path, metavar="CONFIG.toml")
    train.add_argument("--model", help="override model.name_or_path")
    train.add_argument("--data", help="override data.train_file")
    train.add_argument("--output", type=Path, help="run directory (default: a new folder under the runs folder)")
    train.add_argument("--max-steps", type=int, help="override training.max_steps")
    train.add_argument("--resume", nargs="?", const="latest", metavar="CKPT",
                       help="continue from a checkpoint folder (no value: the run's latest checkpoint)")

    chat = sub.add_parser("chat", help="talk to a model, optionally with adapters")
    chat.add_argument("--model", required=True, help="base model folder or Hub id, or a run directory")
    chat.add_argument("--adapter", action="append", default=[], help="adapter folder (repeatable)")
    chat.add_argument("--prompt", help="one-shot prompt; without it, an interactive session")
    chat.add_argument("--max-new-tokens", type=int, default=256)
    chat.add_argument("--load-in-4bit", action="store_true", help="load the base in 4-bit NF4")

    merge = sub.add_parser("merge", help="merge an adapter into its base model (16-bit)")
    merge.add_argument("adapter", type=Path, metavar="RUN_DIR_OR_ADAPTER")
    merge.add_argument("--output", type=Path, required=True)
    merge.add_argument("--base", help="base model (default: the one recorded in the adapter)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command is None:
        from studio.ui.app import run_app

        return run_app()
    handler = {"demo": cmd_demo, "train": cmd_train, "chat": cmd_chat, "merge": cmd_merge}[args.command]
    try:
        return handler(args)
    except BadInput as error:
        print(f"finetune-studio {args.command}: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERNAL


def cmd_demo(args: argparse.Namespace) -> int:
    from studio.core.demo import build_demo
    from studio.core.presets import write_demo_config

    assets = build_demo(args.output, force=args.force, progress=lambda m: print(m, file=sys.stderr))
    write_demo_config(assets)
    print(f"model:   {assets.model_dir}\ndataset: {assets.dataset_path}\nconfig:  {assets.config_path}")
    print(f"train it: finetune-studio train {assets.config_path}", file=sys.stderr)
    return EXIT_OK


def _print_event(event: dict[str, Any]) -> None:
    """A compact human line per event for the terminal (the events file holds the full record)."""
    kind = event["event"]
    if kind == "step":
        extra = f" lr {event['learning_rate']:.2e}" if event.get("learning_rate") is not None else ""
        print(f"step {event['step']} loss {event['loss']:.4f}{extra}", flush=True)
    elif kind == "log":
        print(event["message"], flush=True)
    elif kind == "eval":
        print(f"eval step {event['step']} loss {event['eval_loss']:.4f}", flush=True)
    elif kind in ("started", "checkpoint", "finished", "failed"):
        fields = {k: v for k, v in event.items() if k not in ("event", "time", "issues")}
        print(f"{kind}: {json.dumps(fields, ensure_ascii=False)}", flush=True)


def cmd_train(args: argparse.Namespace) -> int:
    from studio.core.config import ConfigError, load_config, save_config
    from studio.core.events import EventWriter
    from studio.core.failures import failure_event
    from studio.core.run_store import RunDirectory, RunStore

    try:
        config = load_config(args.config)
        if args.model:
            config.model.name_or_path = args.model
        if args.data:
            config.data.train_file = str(Path(args.data).resolve())
        if args.max_steps is not None:
            config.training.max_steps = args.max_steps
        config.validate()
    except ConfigError as error:
        raise BadInput(str(error)) from None

    if args.output is not None:
        run_dir = RunDirectory(args.output.resolve())
        run_dir.path.mkdir(parents=True, exist_ok=True)
    else:
        run_dir = RunStore().new_run(config.name, config.model.name_or_path)
    resume_from = _resume_checkpoint(args.resume, run_dir)

    main_process = int(os.environ.get("RANK", "0")) == 0  # under `accelerate launch`, rank 0 records the run
    writer = EventWriter(run_dir.events_path) if main_process else None

    def emit(event: dict[str, Any]) -> None:
        if writer is not None:
            writer.write(event)
            _print_event(event)

    if main_process:
        run_dir.clear_stop_request()
        if not config.name:
            config.name = run_dir.name
        save_config(config, run_dir.config_path)
    _install_stop_signals(run_dir)

    from studio.core.training import run_training

    try:
        run_training(config, run_dir, emit, run_dir.stop_requested, resume_from=resume_from)
        return EXIT_OK
    except Exception as error:  # every failure is recorded as an event before the process ends
        event = failure_event(error, config)
        emit(event)
        if event["kind"] in ("config", "data"):
            print(f"finetune-studio train: {event['message']}", file=sys.stderr)
            return EXIT_BAD_INPUT
        traceback.print_exc()
        return EXIT_INTERNAL
    finally:
        if writer is not None:
            writer.close()


def _resume_checkpoint(resume: str | None, run_dir: Any) -> Path | None:
    if resume is None:
        return None
    if resume == "latest":
        checkpoint = run_dir.latest_checkpoint()
        if checkpoint is None:
            raise BadInput(f"{run_dir.path}: no checkpoint to resume from (give --output the run's folder)")
        return checkpoint
    checkpoint = Path(resume).resolve()
    if not (checkpoint / "trainer_state.json").is_file():
        raise BadInput(f"{checkpoint}: not a checkpoint folder (no trainer_state.json)")
    return checkpoint


def _install_stop_signals(run_dir: Any) -> None:
    """First Ctrl-C / SIGTERM asks for a graceful stop (checkpoint + adapter); a second one interrupts."""

    def request_stop(signum: int, frame: Any) -> None:
        if run_dir.stop_requested():
            signal.default_int_handler(signum, frame)
        run_dir.request_stop()
        print("stop requested: saving a checkpoint and the adapter (press Ctrl-C again to abort)",
              file=sys.stderr, flush=True)

    signal.signal(signal.SIGINT, request_stop)
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, request_stop)


def cmd_chat(args: argparse.Namespace) -> int:
    from studio.core.chat import ChatModel, ModelLoadError

    try:
        model = ChatModel.load(args.model, adapters=args.adapter, load_in_4bit=args.load_in_4bit)
    except ModelLoadError as error:
        raise BadInput(str(error)) from None
    history: list[dict[str, str]] = []
    prompts = [args.prompt] if args.prompt is not None else None
    while True:
        if prompts is not None:
            if not prompts:
                return EXIT_OK
            prompt = prompts.pop()
        else:
            try:
                prompt = input("you> ")
            except EOFError:
                return EXIT_OK
            if not prompt.strip():
                continue
        history.append({"role": "user", "content": prompt})
        reply = []
        for piece in model.stream_reply(history, max_new_tokens=args.max_new_tokens):
            reply.append(piece)
            print(piece, end="", flush=True)
        print()
        history.append({"role": "assistant", "content": "".join(reply)})


def cmd_merge(args: argparse.Namespace) -> int:
    from studio.core.chat import ModelLoadError
    from studio.core.merge import merge_adapter

    try:
        out = merge_adapter(args.adapter, args.output, base=args.base,
                            progress=lambda m: print(m, file=sys.stderr))
    except ModelLoadError as error:
        raise BadInput(str(error)) from None
    print(out)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
