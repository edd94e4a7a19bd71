"""Issue 21, "one preflight for every refusal": bad input to `finetune-studio train` is exit 2 and one line naming
the file or key, with no traceback, before any run folder exists (items 14, 15, 16, 18)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from studio.core.config.settings import load_config, save_config
from preflight_shared import assert_refused_before_a_run_folder  # noqa: F401  (shared with the other half)




def test_a_relative_model_folder_missing_next_to_the_config_is_named_with_the_folder_looked_in(
        tmp_path, demo_assets, run_studio):
    """Today: the relative name is taken for a Hub id, and the run fails on the Hub's connection error."""
    config = load_config(demo_assets.config_path)
    config.model.name_or_path = "my-model"
    folder = tmp_path / "project"
    folder.mkdir()
    save_config(config, folder / "train.toml")
    run = tmp_path / "run"
    line = assert_refused_before_a_run_folder(run_studio("train", folder / "train.toml", "--output", run), run)
    assert line == (f"finetune-studio train: {folder / 'train.toml'}: model.name_or_path = 'my-model': no folder "
                    f"`my-model` next to train.toml (looked in {folder / 'my-model'}), and not a Hub id (those read "
                    "org/name)")


def test_one_rule_tells_a_hub_id_from_a_path_for_models_and_data(tmp_path):
    from studio.core.data import sources
    from studio.core.models import source
    from studio.core.system.paths import looks_like_hub_id

    assert sources.looks_like_hub_id is looks_like_hub_id and source.looks_like_hub_id is looks_like_hub_id
    assert looks_like_hub_id("meta-llama/Llama-3.2-1B") and looks_like_hub_id("HuggingFaceTB/smoltalk")
    for path in ("books/moby-dick.txt", "models/demo.gguf", "./org/name", "~/org", "/abs/org", "a/b/c", "model"):
        assert not looks_like_hub_id(path), path
    (tmp_path / "org").mkdir()
    (tmp_path / "org" / "name").mkdir()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert not looks_like_hub_id("org/name"), "a folder that exists is a path"
    finally:
        os.chdir(cwd)


# ------------------------------------------------------------------------------------------------ item 15


@pytest.mark.parametrize("kind", ["fifo", "link to /dev/zero"])
def test_data_that_is_not_a_regular_file_is_refused_as_such_before_a_run_folder(tmp_path, demo_assets, run_studio,
                                                                                 kind, studio_home):
    """Today: "no such file" from the reader, and `train` leaves a `failed (data)` run folder."""
    data = tmp_path / "data.jsonl"
    if kind == "fifo":
        os.mkfifo(data)
        said = "a named pipe (FIFO)"
    else:
        data.symlink_to("/dev/zero")
        said = "a character device"
    config = load_config(demo_assets.config_path)
    config.data.train_file = str(data)
    save_config(config, tmp_path / "train.toml")
    run = tmp_path / "run"
    line = assert_refused_before_a_run_folder(run_studio("train", tmp_path / "train.toml", "--output", run), run)
    assert line.startswith(f"finetune-studio train: {tmp_path / 'train.toml'}: data.train_file = '{data}': not a "
                           f"regular file ({said}")

    from studio.core.data.issues import DataError
    from studio.core.data.loading import load_data

    with pytest.raises(DataError, match="not a regular file"):
        load_data(data)  # the Dataset tab and `data inspect` read through the same rule


def test_a_bad_row_found_while_the_run_reads_is_told_to_the_terminal_with_the_flag():
    """A row that goes bad after the preflight (the file edited meanwhile) still fails the run: its terminal line
    names --skip-bad-rows, where the event's hint (the window's) names the Skip bad rows box."""
    from studio.core.data.issues import DataError, DataIssue
    from studio.core.train.failures import failure_event
    from studio.core.train.report import event_line

    event = failure_event(DataError("d.jsonl: 1 bad row(s)", [DataIssue(Path("d.jsonl"), 3, "malformed JSON")]), None)
    assert "tick Skip bad rows" in event["hint"]
    line = event_line(event)
    assert "--skip-bad-rows" in line and "tick" not in line
