"""Training methods beyond SFT: DPO, ORPO, KTO and GRPO on the demo model, and the data they read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from studio.core.config.settings import ConfigError, RunConfig, load_config, save_config
from studio.core.methods.registry import method as method_spec
from studio.core.runs.store import RunDirectory
from preference_shared import _config, _write_jsonl  # noqa: F401  (shared with the other half)


def _demo_pairs(dataset: Path) -> list[tuple[str, str, str]]:
    """(question, the demo's trained answer, another question's answer) for each demo conversation."""
    rows = [json.loads(line)["messages"] for line in dataset.read_text(encoding="utf-8").splitlines()]
    return [(m[0]["content"], m[1]["content"], rows[(i + 3) % len(rows)][1]["content"]) for i, m in enumerate(rows)]




def _method_data(method: str, demo_assets, folder: Path) -> Path:
    pairs = _demo_pairs(demo_assets.dataset_path)
    if method in ("dpo", "orpo"):
        records = [{"prompt": q, "chosen": a, "rejected": w} for q, a, w in pairs]
    elif method == "kto":
        records = [r for q, a, w in pairs for r in ({"prompt": q, "completion": a, "label": True},
                                                    {"prompt": q, "completion": w, "label": False})]
    else:
        records = [{"prompt": q, "completion": a} for q, a, _ in pairs]
    return _write_jsonl(folder / f"{method}.jsonl", records)




def _train(config: RunConfig, folder: Path, should_stop=lambda: False, **kwargs):
    from studio.core.runs.events import EventWriter
    from studio.core.train.run import run_training

    run = RunDirectory(folder)
    run.path.mkdir(parents=True, exist_ok=True)
    save_config(config, run.config_path)
    with EventWriter(run.events_path) as writer:
        status = run_training(config, run, writer.write, should_stop, **kwargs)
    return run, status


@pytest.mark.timeout(120)  # a regex reward without a bound would stall here for hours
def test_grpo_rewards_come_from_the_metrics_with_weights_and_a_length_penalty():
    from studio.core.methods.grpo.trainer import reward_functions

    config = RunConfig()
    config.training.method = "grpo"
    config.grpo.rewards = ["tool_call=2", "contains=0.5"]
    config.grpo.length_penalty = 0.1
    config.grpo.max_completion_length = 10
    functions, weights = reward_functions(config)
    assert [f.__name__ for f in functions] == ["tool_call", "contains", "length_penalty"]
    assert weights == [2.0, 0.5, 0.1]
    tool_call, _, length = functions
    want = '<tool_code>get_bill({"phone": "0532"})</tool_code>'
    replies = [want, '<tool_code>get_bill({"phone": "0000"})</tool_code>', '<tool_code>get_plan({})</tool_code>',
               "no call"]
    # Partial credit: the right call 1; right function, valid JSON, wrong argument 0.5; wrong function 0.25.
    assert tool_call([None] * 4, replies, expected=[want] * 4) == [1.0, 0.5, 0.25, 0.0]
    conversational = [[{"role": "assistant", "content": want}]]
    assert tool_call([None], conversational, expected=[want]) == [1.0]
    assert length([None, None], ["", ""], completion_ids=[[1] * 5, [1] * 20]) == [-0.5, -1.0]

    config.grpo.rewards, config.grpo.reward_pattern = ["regex=1"], r"(a|aa)+$"
    config.grpo.length_penalty = 0.0
    (regex,), _ = reward_functions(config)
    # A catastrophically backtracking pattern is stopped after a second per reply and scores 0: one bad reward
    # pattern cannot stall a GRPO step (with `re` this reply would take hours).
    assert regex([None] * 2, ["a" * 80 + "!", "baaaa"], expected=["", ""]) == [0.0, 1.0]

    config.grpo.rewards, config.grpo.reward_pattern = ["bleu=1"], ""
    with pytest.raises(ConfigError, match="grpo.rewards.*unknown metric 'bleu'"):
        reward_functions(config)
    config.grpo.rewards = ["regex"]
    with pytest.raises(ConfigError, match="grpo.reward_pattern"):
        reward_functions(config)
    config.model.name_or_path, config.data.train_file = "model", "data.jsonl"
    config.grpo.rewards, config.grpo.num_generations = ["exact=x"], 2
    with pytest.raises(ConfigError, match="grpo.rewards.*not a number"):
        config.validate()


# ------------------------------------------------------------------ every method trains on the demo model


METHOD_METRICS = {
    "dpo": ("rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected"),
    "orpo": ("rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected"),
    "kto": ("rewards/chosen", "rewards/rejected", "logps/chosen", "kl"),
    "grpo": ("reward", "reward_std", "rewards/contains/mean", "completions/mean_length", "kl"),
}


@pytest.mark.parametrize("method", ["dpo", "orpo", "kto", "grpo"])
def test_each_method_trains_writes_a_complete_run_and_logs_its_metrics(method, demo_assets, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    data = _method_data(method, demo_assets, tmp_path)
    extra = {"rewards": ["contains=1.0"]} if method == "grpo" else {}
    run, status = _train(_config(demo_assets, method, data, save_steps=2, **extra), tmp_path / "run")

    assert status == "completed"
    events = run.events()
    steps = [e for e in events if e["event"] == "step"]
    assert [e["step"] for e in steps] == [1, 2, 3, 4]
    for key in METHOD_METRICS[method]:
        assert all(key in e["metrics"] for e in steps), f"{key} missing from {method}'s step events"
    finished = events[-1]
    assert finished["event"] == "finished" and finished["status"] == "completed" and finished["adapter_tensors"] > 0
    assert run.status() == "completed"
    assert [p.name for p in run.checkpoints()] == ["checkpoint-2", "checkpoint-4"]
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(demo_assets.model_dir)),
                                      str(run.adapter_dir))
    assert any("lora_" in name for name, _ in tuned.named_parameters())


@pytest.mark.parametrize("method", ["dpo", "orpo", "kto", "grpo"])
def test_each_method_stops_on_request_and_resumes_to_its_end(method, demo_assets, tmp_path):
    data = _method_data(method, demo_assets, tmp_path)
    extra = {"rewards": ["contains=1.0"]} if method == "grpo" else {}
    config = _config(demo_assets, method, data, max_steps=6, save_steps=50, **extra)
    seen: list[int] = []

    def should_stop() -> bool:
        seen.append(1)
        return len(seen) >= 2

    run, status = _train(config, tmp_path / "run", should_stop)
    assert status == "stopped"
    stopped_at = run.events()[-1]["step"]
    assert run.events()[-1]["status"] == "stopped" and 2 <= stopped_at < 6
    assert [p.name for p in run.checkpoints()] == [f"checkpoint-{stopped_at}"]

    run, status = _train(config, run.path, resume_from=run.latest_checkpoint())
    assert status == "completed"
    events = run.events()
    started = [e for e in events if e["event"] == "started"][-1]
    assert started["start_step"] == stopped_at
    resumed_steps = [e["step"] for e in events[events.index(started):] if e["event"] == "step"]
    assert resumed_steps == list(range(stopped_at + 1, 7))
    assert events[-1]["status"] == "completed" and events[-1]["step"] == 6


def _reply_logprob(model, tokenizer, question: str, reply: str) -> float:
    """The summed log-probability of `reply` (and its end-of-turn) after `question`, through the chat template."""
    import torch

    prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                           tokenize=False)
    full = tokenizer.apply_chat_template([{"role": "user", "content": question},
                                          {"role": "assistant", "content": reply}], tokenize=False)
    start = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    ids = torch.tensor([tokenizer(full, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        logps = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
    targets = ids[0, 1:]
    return float(logps[start - 1:].gather(1, targets[start - 1:, None]).sum())


def test_dpo_from_the_untuned_base_learns_to_prefer_the_chosen_answers(demo_assets, tmp_path):
    """The demo's answers as chosen, another question's answer as rejected, no SFT first.

    Measured (2 CPU cores, 60 steps, lr 3e-3, beta 0.1, 7 s): the reward accuracy goes from 0.5 over the first
    ten steps to 1.0 over the last ten; the chosen answer has the higher likelihood on 5 of 10 questions before
    and 9 of 10 after. Greedy replies do not become the chosen answers (0 of 10 exactly; DPO moves the two replies'
    likelihoods apart, it does not teach a random base to write): that needs SFT first, the usual order.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pairs = _demo_pairs(demo_assets.dataset_path)
    data = _method_data("dpo", demo_assets, tmp_path)
    run, status = _train(_config(demo_assets, "dpo", data, max_steps=60, beta=0.1), tmp_path / "run")
    assert status == "completed"
    accuracies = [e["metrics"]["rewards/accuracies"] for e in run.events() if e["event"] == "step"]
    first, last = sum(accuracies[:10]) / 10, sum(accuracies[-10:]) / 10
    assert last >= 0.9 and last > first, f"reward accuracy {first:.2f} → {last:.2f}"

    tokenizer = AutoTokenizer.from_pretrained(str(run.adapter_dir))
    base = AutoModelForCausalLM.from_pretrained(str(demo_assets.model_dir), dtype=torch.float32).eval()

    def preferred(model) -> int:
        return sum(_reply_logprob(model, tokenizer, q, a) > _reply_logprob(model, tokenizer, q, w)
                   for q, a, w in pairs)

    before = preferred(base)
    tuned = PeftModel.from_pretrained(base, str(run.adapter_dir)).eval()
    after = preferred(tuned)
    assert after >= 8 and after > before, f"chosen preferred on {before}/10 before, {after}/10 after"


def test_dpo_with_its_supervised_term_from_the_untuned_base_gives_the_chosen_answers_in_greedy_chat(demo_assets,
                                                                                                    tmp_path):
    """The must-show from a base without SFT: plain DPO (above) only separates likelihoods, so the run adds TRL's
    supervised loss on the chosen replies ([dpo] sft_weight, RPO's recipe); greedy chat then answers with
    the chosen replies and never the rejected ones."""
    data = _method_data("dpo", demo_assets, tmp_path)
    config = _config(demo_assets, "dpo", data, max_steps=DPO_SFT_STEPS, beta=0.1)
    config.dpo.sft_weight, config.training.learning_rate = 1.0, DPO_SFT_LR
    run, status = _train(config, tmp_path / "run")
    assert status == "completed"
    accuracies = [e["metrics"]["rewards/accuracies"] for e in run.events() if e["event"] == "step"]
    first, last = sum(accuracies[:10]) / 10, sum(accuracies[-10:]) / 10
    (chosen, rejected), = _greedy_matches([], run.path, demo_assets.dataset_path).values()
    print(f"\nDPO + supervised term from the base: greedy replies equal to chosen/rejected {chosen}/{rejected} of 10; "
          f"reward accuracy {first:.2f} -> {last:.2f}")
    assert last > first, f"reward accuracy {first:.2f} -> {last:.2f}"
    assert chosen >= 8 and rejected == 0


DPO_SFT_STEPS, DPO_SFT_LR = 60, 3e-3


# ------------------------------------------------------------------ continuing from an SFT run's adapter


def test_continue_config_keeps_the_runs_loading_and_points_at_its_adapter(trained_run):
    from studio.core.sessions.continuation import continue_config

    sft = load_config(RunDirectory(trained_run).config_path)
    dpo = continue_config(trained_run, "dpo")
    assert dpo.training.method == "dpo" and dpo.model.init_adapter == str(trained_run.resolve())
    assert (dpo.model.name_or_path, dpo.quantization, dpo.lora) == (sft.model.name_or_path, sft.quantization, sft.lora)
    assert dpo.data.train_file == "" and dpo.name == ""  # an SFT run's chat data holds no pairs: the user picks them
    grpo = continue_config(trained_run, "grpo")
    assert grpo.data.train_file == sft.data.train_file  # a chat record's last reply is GRPO's expected reply
    # Gentler than the SFT run (test_continuing_with_dpo_or_kto_keeps_the_tool_calls_sft_taught measures why).
    assert dpo.training.learning_rate == grpo.training.learning_rate == pytest.approx(sft.training.learning_rate / 10)
    assert dpo.dpo.sft_weight == 1.0
    assert continue_config(trained_run, "orpo").training.learning_rate == sft.training.learning_rate
    with pytest.raises(ConfigError, match="training.method"):
        continue_config(trained_run, "ppo")


def test_an_adapter_is_continued_only_on_the_base_it_trained_on(trained_run, tmp_path):
    from studio.core.train.init_adapter import resolve_init_adapter

    config = load_config(RunDirectory(trained_run).config_path)
    config.model.init_adapter = str(trained_run)
    assert resolve_init_adapter(config).adapter_dir == RunDirectory(trained_run).adapter_dir
    config.model.init_adapter = str(RunDirectory(trained_run).adapter_dir)  # the adapter folder itself
    assert resolve_init_adapter(config).trained.describe() == "4-bit NF4 (double quantisation)"
    config.quantization.mode = "none"
    with pytest.raises(ConfigError, match=r"model.init_adapter = .*trained on the 4-bit NF4 .* base, and this run "
                                          r"loads it 16-bit \(quantization.mode = 'none'\)"):
        resolve_init_adapter(config)
    config.model.init_adapter = str(tmp_path)
    with pytest.raises(ConfigError, match="model.init_adapter.*neither an adapter folder"):
        resolve_init_adapter(config)


def _greedy_matches(adapters: list[Path], run_with_base: Path, dataset: Path) -> dict[str, tuple[int, int]]:
    """Per adapter: (greedy replies equal to the chosen answer, equal to the rejected one) over the demo's prompts."""
    from studio.core.chat.model import ChatModel
    from studio.core.eval.cases import load_eval_set
    from studio.core.eval.generate import generate_batch

    pairs = _demo_pairs(dataset)
    cases = load_eval_set(dataset).cases
    chat = ChatModel.load(run_with_base, adapters)
    try:
        counts = {}
        for name in chat.adapters:
            replies = [g.reply.strip() for g in generate_batch(chat, name, cases, max_new_tokens=60, with_loss=False)]
            counts[name] = (sum(r == a.strip() for r, (_, a, _) in zip(replies, pairs)),
                            sum(r == w.strip() for r, (_, _, w) in zip(replies, pairs)))
        return counts
    finally:
        chat.unload()


def test_dpo_continuing_from_the_sft_run_keeps_greedy_chat_on_the_chosen_answers(trained_run, demo_assets, tmp_path):
    """SFT, then DPO from its adapter (the usual order) on the demo's pairs: greedy chat gives the chosen answer."""
    from studio.core.sessions.continuation import continue_config

    config = continue_config(trained_run, "dpo")
    config.data.train_file = str(_method_data("dpo", demo_assets, tmp_path))
    config.training.max_steps, config.training.save_steps = 30, 100
    config.training.learning_rate, config.dpo.beta = 1e-3, 0.1
    run, status = _train(config, tmp_path / "run")
    assert status == "completed"
    events = run.events()
    assert any("reference model is a frozen copy of that adapter" in e.get("message", "") for e in events)
    accuracies = [e["metrics"]["rewards/accuracies"] for e in events if e["event"] == "step"]
    first, last = sum(accuracies[:5]) / 5, sum(accuracies[-5:]) / 5
    assert last >= 0.9 and last > first, f"reward accuracy {first:.2f} → {last:.2f}"
    assert not (run.adapter_dir / "ref").exists(), "only the trained adapter is saved, not TRL's reference copy"

    counts = _greedy_matches([run.adapter_dir], trained_run, demo_assets.dataset_path)
    (sft_chosen, sft_rejected), (dpo_chosen, dpo_rejected) = counts.values()
    print(f"\ngreedy replies equal to chosen/rejected: SFT {sft_chosen}/{sft_rejected}, "
          f"SFT+DPO {dpo_chosen}/{dpo_rejected} of 10; reward accuracy {first:.2f} → {last:.2f}")
    assert dpo_chosen >= 8 and dpo_chosen >= sft_chosen and dpo_rejected == 0


def _bill_prompts(count: int = 10) -> list[tuple[str, str]]:
    """(question, the right call) for `count` phone lines: a call is right only with the line's own number."""
    import random

    rng = random.Random(7)
    phones = ["05" + "".join(rng.choice("0123456789") for _ in range(9)) for _ in range(count)]
    return [(f"What is the bill of line {p}?", f'<tool_code>get_bill({{"phone": "{p}"}})</tool_code>') for p in phones]


def _tool_call_scores(run_with_base: Path, adapters: list[Path], dataset: Path) -> list[int]:
    """Per adapter (the run's own first, then `adapters`): the prompts of `dataset` whose greedy reply makes exactly
    the expected call."""
    from studio.core.chat.model import ChatModel
    from studio.core.eval.cases import load_eval_set
    from studio.core.eval.generate import generate_batch
    from studio.core.metrics.tool_calls import tool_call_match

    cases = load_eval_set(dataset).cases
    chat = ChatModel.load(run_with_base, adapters)
    try:
        return [sum(tool_call_match(g.reply, case.expected).passed
                    for g, case in zip(generate_batch(chat, name, cases, max_new_tokens=48, with_loss=False), cases))
                for name in chat.adapters]
    finally:
        chat.unload()


def test_continuing_with_dpo_or_kto_keeps_the_tool_calls_sft_taught(demo_assets, tmp_path):
    """SFT teaches ten right calls (each with its line's number), then "Continue with…" DPO and KTO, as configured
    by continue_config, on pairs whose rejected call names another line.

    Measured (demo model, 60 SFT steps at 3e-3, then 30 steps): SFT 7/10 right calls; at the SFT run's rate (the
    old continuation) DPO left 0/10 and KTO 0/10, every number turned to noise; with a tenth of the rate (and for
    DPO the supervised term, weight 1) DPO 10/10 and KTO 10/10. ORPO, whose loss has its own supervised term,
    kept 9/10 at either rate."""
    from studio.core.sessions.continuation import continue_config

    prompts = _bill_prompts()
    chats = _write_jsonl(tmp_path / "calls.jsonl", [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": c}]} for q, c in prompts])
    wrong = prompts[3:] + prompts[:3]  # another line's call
    pairs = _write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": q, "chosen": c, "rejected": w}
                                                    for (q, c), (_, w) in zip(prompts, wrong)])
    labelled = _write_jsonl(tmp_path / "kto.jsonl", [row for (q, c), (_, w) in zip(prompts, wrong) for row in (
        {"prompt": q, "completion": c, "label": True}, {"prompt": q, "completion": w, "label": False})])
    sft = load_config(demo_assets.config_path)
    sft.data.train_file, sft.training.save_steps = str(chats), 1000
    sft_run, status = _train(sft, tmp_path / "sft")
    assert status == "completed"

    adapters = []
    for method, data in (("dpo", pairs), ("kto", labelled)):
        config = continue_config(sft_run.path, method)
        config.data.train_file = str(data)
        config.training.max_steps, config.training.save_steps = 30, 1000
        run, status = _train(config, tmp_path / method)
        assert status == "completed"
        adapters.append(run.adapter_dir)

    before, dpo, kto = _tool_call_scores(sft_run.path, adapters, chats)  # the run's own adapter comes first
    print(f"\nright tool calls of 10: SFT {before}, continued with DPO {dpo}, with KTO {kto}")
    assert before >= 6, "the SFT run learnt the calls"
    assert dpo >= before and kto >= before, "the continuation kept what SFT taught"


SFT_STEPS, GRPO_STEPS, GRPO_LR, GRPO_TEMPERATURE = 25, 60, 3e-4, 0.7

TOOL_CALLS = [
    ("What is the bill of line 0532?", 'get_bill({"phone": "0532"})'),
    ("Where is my order SP17?", 'track_order({"order_id": "SP17"})'),
    ("Is there an outage in Izmir?", 'check_outage({"city": "Izmir"})'),
    ("What is the bill of line 0544?", 'get_bill({"phone": "0544"})'),
    ("Where is my order SP92?", 'track_order({"order_id": "SP92"})'),
    ("Is there an outage in Bursa?", 'check_outage({"city": "Bursa"})'),
]


def _tool_call_chats(folder: Path) -> Path:
    return _write_jsonl(folder / "calls.jsonl", [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": f"<tool_code>{c}</tool_code>"}]}
        for q, c in TOOL_CALLS])


def test_grpo_continuing_from_a_tool_call_sft_adapter_raises_the_tool_call_reward(demo_assets, tmp_path):
    """A short SFT on six tool-call chats (a start that writes calls, mostly not yet the right ones), then GRPO from
    its adapter with the tool-call reward on the same prompts: the mean reward rises.

    Measured (2 CPU cores; SFT 25 steps, GRPO 60 steps at lr 3e-4, 4 generations of at most 64 tokens sampled at
    temperature 0.7), mean tool-call reward of the first and last thirds of the run: 0.083 -> 0.136 (seed 42),
    0.105 -> 0.147 (seed 1), 0.088 -> 0.116 (seed 2). At TRL's default temperature 1.0 this 2-layer model samples
    noise, every reply of a group scores the same and nothing is learnt (0.07 -> 0.00); at lr 3e-3 the policy
    collapses (0.49 -> 0.13); from a 40-step SFT the calls are already right (0.84 -> 0.84). Since the demo's
    tokenizer learnt the <tool_code> form and training keeps the 4-bit weights unpacked (issue 21): 0.53 -> 0.59
    (seed 42)."""
    from studio.core.sessions.continuation import continue_config

    calls = _tool_call_chats(tmp_path)
    sft = load_config(demo_assets.config_path)
    sft.data.train_file, sft.training.max_steps, sft.training.save_steps = str(calls), SFT_STEPS, 100
    sft_run, status = _train(sft, tmp_path / "sft")
    assert status == "completed"

    config = continue_config(sft_run.path, "grpo")
    t, g = config.training, config.grpo
    g.rewards, t.max_steps, t.save_steps, t.learning_rate = ["tool_call=1.0"], GRPO_STEPS, 100, GRPO_LR
    g.num_generations, t.per_device_train_batch_size, t.gradient_accumulation_steps = 4, 8, 1
    g.max_completion_length = 64  # a call is 41 tokens of the demo tokenizer
    g.generation_temperature = GRPO_TEMPERATURE
    run, status = _train(config, tmp_path / "grpo")
    assert status == "completed"
    steps = [e for e in run.events() if e["event"] == "step"]
    rewards = [e["metrics"]["rewards/tool_call/mean"] for e in steps]
    third = len(rewards) // 3
    first, last = sum(rewards[:third]) / third, sum(rewards[-third:]) / third
    print(f"\nGRPO tool-call reward per step: {' '.join(f'{r:.2f}' for r in rewards)}; first third {first:.2f}, "
          f"last third {last:.2f}")
    assert sum(r > 0 for r in rewards) >= len(rewards) // 2, "the SFT start writes calls that earn a reward"
    assert any(e["metrics"]["frac_reward_zero_std"] < 1 for e in steps), "some group's replies are scored apart"
    assert last > first, "GRPO raises the mean tool-call reward"
