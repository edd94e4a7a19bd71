"""One training run: the child process's entry, the supervisor that starts and watches it, data preparation,
the factories where our settings meet transformers/PEFT/TRL, the callback that writes events, and the
failure kinds (OOM, full disk) with their advice."""
