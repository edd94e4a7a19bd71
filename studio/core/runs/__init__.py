"""A run's folder and what it holds: the run store, the event log (events.jsonl), the record a run leaves
(run.toml + events, or finetune_studio.json beside an export) and the run history's metrics."""
