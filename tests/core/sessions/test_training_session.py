"""sessions/training without Qt: Start checks once per process, the events become the plots' series and the tab's
texts, and a run's start and end are announced to plain callbacks."""

from __future__ import annotations



from studio.core.config.settings import load_config
from studio.core.runs.events import FailedEvent, make_event
from studio.core.runs.store import RunStore
from studio.core.sessions.training import TrainingSeries, TrainingSession


def ev(kind: str, t: float, /, **fields) -> dict:
    return {"event": kind, "time": t, **fields}


def step(n: int, t: float, loss: float, **metrics) -> dict:
    return ev("step", t, step=n, epoch=n / 10, loss=loss, learning_rate=1e-3, grad_norm=1.0, tokens_per_second=50.0,
              metrics=metrics)


def test_a_refused_start_makes_no_run_and_says_why(demo_assets, tmp_path):
    config = load_config(demo_assets.config_path)
    config.training.learning_rate = -1.0
    session = TrainingSession(RunStore(tmp_path / "runs"))
    seen = []
    session.subscribe(lambda: seen.append(session.status))
    assert session.start(config) is None
    assert session.status.word == "not started" and "training.learning_rate" in session.status.text
    assert seen == [session.status]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_the_series_fold_the_events_the_plots_draw_and_say_what_changed():
    series = TrainingSeries()
    changes = []
    series.subscribe(changes.append)
    series.feed(ev("log", 100.0, pid=1, message="Loading"))
    series.feed(ev("started", 101.0, pid=1, total_steps=4))
    series.feed(step(1, 102.0, 2.0, **{"rewards/margins": 0.5, "reward": 1.0}))
    series.feed(step(2, 103.0, 1.5, **{"rewards/margins": 0.7, "reward": float("nan")}))
    series.feed(ev("eval", 103.5, step=2, eval_loss=1.8))
    series.feed(ev("eval_scores", 103.6, step=2, metric="exact", passed=3, total=8, score=0.375))
    assert changes == ["step", "step", "eval", "score"]
    assert series.xs(by_time=False) == [1, 2] and series.metrics.series["loss"] == [2.0, 1.5]
    assert series.eval_xs(by_time=False) == [2] and series.score_points[-1].label == "3/8"
    assert series.method_series("rewards/margins") == ([1.0, 2.0], [0.5, 0.7])
    assert series.method_series("reward") == ([1.0], [1.0]), "a NaN is no point"
    assert [spec.title for spec, _ in series.method_plots()] == ["Reward margin", "Reward"]

    # A resume from step 1 trains step 2 again: its points go, and the plots redraw everything.
    series.feed(ev("log", 200.0, pid=2, resumed_from="checkpoint-1"))
    series.feed(ev("started", 201.0, pid=2, total_steps=4, start_step=1))
    assert changes[-1] == "reset"
    assert series.xs(by_time=False) == [1] and series.method_series("rewards/margins") == ([1.0], [0.5])
    assert series.score_points == []


def test_grpo_reward_functions_are_plotted_per_function_and_dpo_margins_apart():
    series = TrainingSeries()
    series.feed(ev("started", 1.0, pid=1, total_steps=2))
    series.feed(step(1, 2.0, 0.1, **{"rewards/tool_call/mean": 0.5, "rewards/tool_call/std": 0.1, "kl": 0.01,
                                      "completions/mean_length": 12.0}))
    plots = dict((spec.title, keys) for spec, keys in series.method_plots())
    assert plots == {"Reward per function": ["rewards/tool_call/mean"], "Reply length": ["completions/mean_length"],
                     "KL from the base": ["kl"]}


def test_the_session_tells_the_run_from_its_events(demo_assets, tmp_path):
    store = RunStore(tmp_path / "runs")
    run_dir = store.new_run("demo", "model")
    session = TrainingSession(store)
    started, ended = [], []
    session.run_started.append(started.append)
    session.run_ended.append(lambda *args: ended.append(args))

    session.began(run_dir)
    assert started == [run_dir] and session.status.text == "Starting run demo…"
    session.feed(ev("log", 100.0, pid=7, message="Loading demo/model", phase="model"))
    assert session.status.text == "Preparing the run (5 of 5): Loading demo/model" and session.live_pid == 7
    session.feed(ev("started", 101.0, total_steps=4))
    assert session.status.text == "Training demo"
    session.feed(step(1, 102.0, 2.0))
    session.feed(ev("evaluating", 102.5, step=1, done=1, total=3))
    assert session.progress_text(103.0, running=True).endswith("evaluating 1/3 batches")
    session.feed(ev("checkpoint", 103.0, step=1, path="checkpoint-1"))
    assert session.details_text() == "loss 2.0000 · saved at 1"
    assert session.evaluating is None, "the evaluation ended with the save"

    oom = make_event("failed", kind="oom", message="CUDA out of memory", hint="Lower max length.",
                     settings={"max_length": 2048, "gradient_checkpointing": False},
                     suggestion="turn on gradient checkpointing", suggestion_resumable=True)
    assert isinstance(session.feed(oom), FailedEvent)
    (run_dir.checkpoints_dir / "checkpoint-1").mkdir(parents=True)
    (run_dir.checkpoints_dir / "checkpoint-1" / "trainer_state.json").write_text("{}")
    session.ended("failed", "CUDA out of memory")
    assert session.status.word == "failed"
    assert session.status.text == ("Run demo ran out of memory (CUDA out of memory). Settings: max length 2048, "
                                   "gradient checkpointing off.")
    assert session.status.hint == "Lower max length. Resume continues from checkpoint-1."
    assert session.retry_offer() == ("Retry: turn on gradient checkpointing",
                                     "Resume from checkpoint-1 and turn on gradient checkpointing")
    assert session.closing_text.startswith("failed at step 1 · ")
    assert ended == [(run_dir, "failed", "CUDA out of memory")] and session.last_status == "failed"

    session.began(run_dir, "Resuming")
    session.feed(ev("log", 200.0, pid=8, message="Training process 8 started"))
    assert session.last_failure is None, "a new process: the earlier failure is history"


def test_the_memory_readings_are_the_sessions_with_their_peaks_and_warning(tmp_path):
    from studio.core.system.gpu import GpuReading, HostReading

    memory = TrainingSession(RunStore(tmp_path / "runs")).memory
    memory.add(GpuReading(time=1.0, device_name="card", card_used_bytes=6 << 30, card_total_bytes=8 << 30,
                          process_used_bytes=5 << 30))
    memory.add(GpuReading(time=2.0, device_name="card", card_used_bytes=int(7.9 * (1 << 30)),
                          card_total_bytes=8 << 30, process_used_bytes=None))
    assert memory.times == [1.0, 2.0] and memory.process_used[0] == 5 << 30
    assert memory.peak_bytes == int(7.9 * (1 << 30)) and memory.process_peak_bytes == 5 << 30
    assert memory.nearly_full and memory.total_bytes == 8 << 30
    memory.reset_peak()
    memory.add(HostReading(time=3.0, process_rss_bytes=1 << 30, host_total_bytes=16 << 30))
    assert memory.peak_bytes == 1 << 30 and memory.process_peak_bytes is None and not memory.nearly_full
    memory.clear()
    assert memory.times == [] and memory.latest is None
