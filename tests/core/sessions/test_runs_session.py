"""The runs session: one scan of the runs folder feeds every reader, and every change reaches every observer."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from studio.core.config.settings import RunConfig, save_config
from studio.core.runs.events import EventWriter, make_event
from studio.core.runs.store import RunDirectory, RunStore
from studio.core.sessions.runs import RunActionError, RunsSession


def _run(store: RunStore, name: str, *, base: str = "tiny", status: str | None = "completed",
         adapter: bool = True) -> RunDirectory:
    run = store.new_run(name)
    config = RunConfig(name=name)
    config.model.name_or_path = base
    save_config(config, run.config_path)
    with EventWriter(run.events_path) as writer:
        writer.write(make_event("log", level="info", message="Training process started", pid=os.getpid()))
        writer.write(make_event("started", total_steps=2, start_step=0))
        writer.write(make_event("step", step=1, loss=2.0))
        if status is not None:
            writer.write(make_event("finished", status=status, step=1, final_loss=2.0))
    if adapter:
        run.adapter_dir.mkdir()
        (run.adapter_dir / "adapter_config.json").write_text("{}", encoding="utf-8")
    return run


def _finish(run: RunDirectory, status: str = "completed") -> None:
    with EventWriter(run.events_path) as writer:
        writer.write(make_event("finished", status=status, step=2, final_loss=1.0))
    run.adapter_dir.mkdir(exist_ok=True)
    (run.adapter_dir / "adapter_config.json").write_text("{}", encoding="utf-8")


@pytest.fixture
def store(tmp_path):
    store = RunStore(tmp_path / "runs")
    _run(store, "old", base="other")
    time.sleep(0.02)
    _run(store, "stopped-early", status="stopped", adapter=False)
    time.sleep(0.02)
    _run(store, "live", status=None, adapter=False)
    time.sleep(0.02)
    _run(store, "newest")
    return store


def _counting_listings(monkeypatch) -> list[int]:
    listings = []
    original = RunStore.runs
    monkeypatch.setattr(RunStore, "runs", lambda self: listings.append(1) or original(self))
    return listings


def test_one_scan_feeds_the_runs_view_evaluate_chat_and_the_window(store, monkeypatch):
    listings = _counting_listings(monkeypatch)
    session = RunsSession(store)
    seen = {"runs view": [], "evaluate": [], "chat": []}
    for name, changes in seen.items():
        session.subscribe(changes.append)

    change = session.refresh_now()

    assert listings == [1] and session.scans == 1, "one listing of the runs folder for every reader"
    assert all(changes == [change] for changes in seen.values())
    assert [row.name for row in session.rows] == ["newest", "live", "stopped-early", "old"], "newest first"
    assert sorted(path.name for path in change.added) == ["live", "newest", "old", "stopped-early"]
    assert [row.name for row in session.finished_runs()] == ["newest", "old"], "the runs with an adapter"
    assert [run.name for run in session.running_runs()] == ["live"]
    assert session.training_in_progress()
    assert session.latest_adapter_for("tiny") == store.root / "newest" / "adapter"
    assert session.latest_adapter_for("other") == store.root / "old" / "adapter"
    assert listings == [1], "reading the rows lists nothing again"


def test_a_new_an_ended_a_renamed_and_a_deleted_run_reach_every_observer(store, monkeypatch):
    session = RunsSession(store)
    session.refresh_now()
    observers = [[], []]
    for changes in observers:
        session.subscribe(changes.append)
    listings = _counting_listings(monkeypatch)

    # A run another process created, and the live run ending, both seen by the next scan.
    fresh = _run(store, "from-the-cli", status=None, adapter=False)
    _finish(RunDirectory(store.root / "live"))
    change = session.refresh_now()
    assert change.added == (fresh.path,)
    assert [row.name for row in change.ended] == ["live"] and change.ended[0].status == "completed"
    assert "live" in [row.name for row in session.finished_runs()]

    # The CLI's run ends: the next scan reports it (it was seen training).
    _finish(fresh, "stopped")
    assert [row.name for row in session.refresh_now().ended] == ["from-the-cli"]
    assert not session.refresh_now(), "nothing changed: an empty change"
    assert listings == [1, 1, 1]

    # Renamed and deleted here: the rows follow without listing the folder again.
    renamed = session.rename(store.root / "newest", "turkish-calls")
    assert renamed.path == store.root / "turkish-calls"
    names = [row.name for row in session.rows]
    assert "turkish-calls" in names and "newest" not in names
    deleted, refused = session.delete([store.root / "old"])
    assert deleted == ["old"] and refused == [] and not (store.root / "old").exists()
    assert listings == [1, 1, 1], "a rename or a deletion made here is not a scan"

    # Deleted behind the window's back: the next scan reports it.
    shutil.rmtree(store.root / "stopped-early")
    gone = session.refresh_now()

    for changes in observers:
        assert [c.renamed for c in changes if c.renamed] == [((store.root / "newest", renamed.path),)]
        assert [c.removed for c in changes if c.removed] == [(store.root / "old",),
                                                            (store.root / "stopped-early",)]
        assert [row.name for c in changes for row in c.ended] == ["live", "from-the-cli"]
        assert changes[-1] is gone


def test_a_run_the_window_starts_is_reported_ended_even_when_no_scan_saw_it_train(store):
    session = RunsSession(store)
    session.refresh_now()
    run = store.new_run("quick")
    started = session.run_started(run.path)
    assert started.added == (run.path,) and session.training_here == run.path
    _finish(run)
    ended = session.run_ended(run.path)
    assert [row.path for row in ended.ended] == [run.path] and session.training_here is None
    assert session.scans == 1, "the window's own run is read, not the folder listed"


def test_refused_actions_say_why_in_one_error(store):
    session = RunsSession(store)
    session.refresh_now()
    with pytest.raises(RunActionError, match="already exists"):
        session.rename(store.root / "newest", "old")
    with pytest.raises(RunActionError, match="still training"):
        session.rename(store.root / "live", "anything")
    deleted, refused = session.delete([store.root / "live"])
    assert deleted == [] and "still training" in refused[0]
    (store.root / "old" / "run.toml").write_text("[model\n", encoding="utf-8")
    with pytest.raises(RunActionError):
        session.settings_of(store.root / "old")


def test_a_refresh_asks_the_scanner_the_window_set(store):
    session = RunsSession(store)
    asked = []
    session.set_scanner(lambda: asked.append(1))
    session.request_refresh()
    assert asked == [1] and session.scans == 0 and session.rows == []


def test_a_background_scan_begun_before_a_change_made_here_is_not_taken(store):
    session = RunsSession(store)
    session.refresh_now()
    since = session.generation
    rows = session.scan()  # a scan under way on the window's worker thread...
    session.rename(store.root / "newest", "renamed")  # ...while the Runs view renames a run
    assert session.apply(rows, since=since) is None, "it still lists the old name: scan again"
    assert "renamed" in [row.name for row in session.rows]
    assert session.apply(session.scan(), since=session.generation) is not None


def test_the_launch_reads_the_statuses_at_once_and_the_rest_without_listing_again(store, monkeypatch):
    listings = _counting_listings(monkeypatch)
    session = RunsSession(store)
    session.scan_quickly()
    assert listings == [1]
    assert [run.name for run in session.running_runs()] == ["live"], "known before the window shows"
    assert session.latest_adapter_for("tiny") == store.root / "newest" / "adapter"
    assert all(not row.read_fully and row.step is None for row in session.rows)

    since = session.generation
    full = session.read_fully(session.rows)  # the window's background thread
    change = session.apply(full, since=since)
    assert listings == [1], "completing the rows lists nothing"
    assert sorted(path.name for path in change.updated) == ["live", "newest", "old", "stopped-early"]
    assert all(row.read_fully and row.step == 1 for row in session.rows)
