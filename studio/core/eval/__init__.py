"""Did the fine-tune work: eval sets (a run's held-out split or any data file), greedy batched replies of the
base and its adapters on one loaded copy of the base, scored by studio.core.metrics, streamed to
`<run>/evals/<name>/results.jsonl` so an eval resumes where it stopped, with a summary beside it."""
