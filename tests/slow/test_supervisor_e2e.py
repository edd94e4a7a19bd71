"""The Qt-free training supervisor: start or watch a child, relay its events, decide and record its ending.

Most tests start a tiny Python child that writes events the way `finetune-studio train` does (its pid first,
then steps, then an ending, or none); the last one supervises the real `finetune-studio train` on the demo.
"""

from __future__ import annotations



from studio.core.config.settings import load_config, save_config
from studio.core.runs.store import RunStore
from studio.core.train import supervisor as supervisor_module
from studio.core.train.supervisor import TrainingSupervisor
from supervisor_shared import Record  # noqa: F401  (shared with the other half)




def test_the_real_training_child_on_the_demo_completes(tmp_path, demo_assets):
    config = load_config(demo_assets.config_path)
    config.training.max_steps = 2
    run = RunStore(tmp_path / "runs").new_run(config.name, config.model.name_or_path)
    config.name = run.name
    save_config(config, run.config_path)
    seen = Record()

    TrainingSupervisor(run).supervise(seen.on_event, seen.on_ended)

    assert seen.endings and seen.endings[0][0] == "completed", (seen.endings, run.log_path.read_text()[-3000:])
    assert [e["step"] for e in seen.events if e["event"] == "step"] == [1, 2]
    assert seen.kinds[-1] == "finished" and run.status() == "completed"
    assert (run.adapter_dir / "adapter_config.json").is_file()
    assert "training 2 steps" in run.log_path.read_text(encoding="utf-8"), "the child's lines go to train.log"
