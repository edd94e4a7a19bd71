"""Scores while training (training.score_examples) and the automatic held-out split of a small dataset."""

from __future__ import annotations


import pytest

from studio.core.config.settings import (
    AUTO_EVAL_MAX_ROWS, AUTO_EVAL_MIN_ROWS, ConfigError, DataSettings, RunConfig, TrainingSettings, apply_auto_eval, auto_eval_fraction, config_field, describe_evaluation, loads,
)
from studio.core.eval.cases import EvalCase


# ------------------------------------------------------------------ the automatic held-out split


def test_the_reference_users_47_rows_get_5_held_out_and_the_config_tab_says_so():
    config = RunConfig()
    assert describe_evaluation(config.data, config.training, 47) == \
        "5 of 47 rows held out for eval (automatic). Evaluated every 50 steps."
    assert apply_auto_eval(config, 47) == "5 of 47 rows held out for eval (automatic: a tenth of a small dataset)"
    assert config.data.eval_fraction == 0.1  # what run.toml then records
    # Once recorded, the split is an explicit fraction: the statement counts it the same way.
    assert describe_evaluation(config.data, config.training, 47) == \
        "5 of 47 rows held out for eval. Evaluated every 50 steps."


@pytest.mark.parametrize("rows", [0, 1, 10, AUTO_EVAL_MIN_ROWS - 1, AUTO_EVAL_MAX_ROWS, 50_000])
def test_data_outside_the_automatic_range_holds_nothing_out(rows):
    config = RunConfig()
    assert apply_auto_eval(config, rows) is None
    assert config.data.eval_fraction == 0.0
    assert describe_evaluation(config.data, config.training, rows).startswith("No evaluation: no eval rows")


@pytest.mark.parametrize("data", [DataSettings(eval_fraction=0.25), DataSettings(eval_file="eval.jsonl"),
                                  DataSettings(eval_auto=False)], ids=["fraction", "file", "off"])
def test_explicit_eval_settings_are_never_changed(data):
    config = RunConfig(data=data)
    assert auto_eval_fraction(data, 47) == 0.0
    assert apply_auto_eval(config, 47) is None
    assert (config.data.eval_fraction, config.data.eval_file) == (data.eval_fraction, data.eval_file)


def test_an_eval_split_turned_off_says_no_evaluation():
    data = DataSettings(eval_auto=False)
    assert describe_evaluation(data, TrainingSettings(), 47) == \
        "No evaluation: no eval rows are chosen (Dataset tab, Evaluation split)."


def _config(text: str) -> RunConfig:
    return loads("[model]\nname_or_path = 'm'\n" + text.replace("[data]", "[data]\ntrain_file = 'd'"))


def test_a_config_file_of_an_older_studio_reads_with_the_rule_and_an_explicit_fraction_wins():
    assert _config("[data]\neval_fraction = 0.0\n").data.eval_auto is True
    assert _config("[data]\neval_auto = false\n").data.eval_auto is False
    config = _config("[data]\neval_fraction = 0.2\n")
    assert apply_auto_eval(config, 47) is None and config.data.eval_fraction == 0.2


# ------------------------------------------------------------------ the scoring settings


def test_the_score_metric_choices_are_the_registrys_metrics_that_need_no_pattern():
    from studio.core.metrics.registry import METRICS

    choices = config_field("training", "score_metric").metadata["choices"]
    assert choices[0] == "auto"
    assert set(choices[1:]) == {name for name, info in METRICS.items() if not info.needs_pattern}


def test_a_score_setting_out_of_range_is_refused_by_name():
    with pytest.raises(ConfigError, match="training.score_examples"):
        _config("[data]\n[training]\nscore_examples = -1\n")
    with pytest.raises(ConfigError, match="training.score_metric"):
        _config("[data]\n[training]\nscore_metric = 'regex'\n")


def _case(expected: str) -> EvalCase:
    return EvalCase("1", ({"role": "user", "content": "q"},), expected)


def test_the_automatic_metric_scores_tool_calls_when_the_replies_make_them():
    from studio.core.train.scores import choose_metric

    call = '<tool_code>get_bill({"phone": "05321234567"})</tool_code>'
    assert choose_metric("auto", [_case("Merhaba"), _case(call)]).name == "tool_call"
    assert choose_metric("auto", [_case("Merhaba"), _case("İyi günler")]).name == "normalised"
    assert choose_metric("exact", [_case(call)]).name == "exact"


def test_no_eval_data_or_no_schedule_turns_scoring_off_with_a_warning():
    from studio.core.train.scores import scores_callback

    config = RunConfig()
    config.training.score_examples = 4
    events: list[dict] = []
    assert scores_callback(config, None, [], events.append, has_eval=False) is None
    config.training.eval_strategy = "no"
    assert scores_callback(config, None, [_case("a")], events.append, has_eval=True) is None
    assert [e["level"] for e in events] == ["warning", "warning"]
    assert "holds out no eval examples" in events[0]["message"] and "never evaluates" in events[1]["message"]
    config.training.score_examples = 0  # off: nothing to say
    assert scores_callback(config, None, [_case("a")], events.append, has_eval=True) is None
    assert len(events) == 2
