"""Run names: the default from the data and the model, `train --name`, and a name in use said, not silently bent."""

from __future__ import annotations


from studio.core.config.settings import RunConfig
from studio.core.runs.store import default_run_name
from studio.core.sessions.draft import RunDraft
from studio.core.sessions.run_name import RunNaming


def test_the_default_name_is_the_datas_and_the_models():
    assert default_run_name("/data/calls-tr.jsonl", "/models/Qwen2.5-0.5B-Instruct") == "calls-tr-Qwen2.5-0.5B-Instruct"
    assert default_run_name("org/support-chats", "meta-llama/Llama-3.2-1B") == "support-chats-Llama-3.2-1B"
    assert default_run_name("", "") == "run"


def test_a_configs_name_gives_way_when_its_data_changes_and_a_typed_one_stays():
    config = RunConfig(name="demo")
    config.data.train_file, config.model.name_or_path = "/d/dataset.jsonl", "/m/model"
    draft = RunDraft(config)
    naming = RunNaming(draft)
    draft.update("training", max_length=128)
    assert naming.name == "demo", "an edit of another field keeps it"
    draft.update("data", train_file="/d/calls-tr.jsonl")
    assert naming.name == "" and naming.for_start() == "calls-tr-model"
    naming.type("my-run")
    draft.update("model", name_or_path="/m/other")
    assert naming.name == "my-run"
