"""The whole preflight of a run: every refusal a run's own code would make, made before its run folder exists.

`config.preflight.check_sources` checks what the config layer can see (the model's files, the data files, the
remote-code opt-in). What only training knows is checked here, by the very code the run uses a moment later, so
the two can never disagree: the method and its GRPO rewards (`methods.trainers`), the adapter a run continues from
(`train.init_adapter`: missing, not a run, trained on another quantisation), and the data, read by the training's
own reader (`data.loading.training_data` for SFT, `methods.reading` for the methods with records of their own)
with the run's skip_bad_rows. Found only in the training child, each of these used to leave a `failed` run in the
history.

The data is read whole. For SFT that read is the one the run then reuses: `data.loading` keeps the normalised
rows in its on-disk cache (keyed by the file's size and modification time and the reading settings), so the
child's own read is a cache hit. Measured on a 100,000-row chat JSONL (22 MB), on a shared 2-core machine: 2.3 s to
read and cache here, then 1.5 s for the child's read from the cache (the Dataset tab has usually cached it already).

`finetune-studio train` (the child, before it makes the run folder) and the Training tab's Start both call
`check_run`; each tells a DataError in its own words (`refusal_line`): the command line names
`--skip-bad-rows` and `--encoding`, the window its Skip bad rows box.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from studio.core.config.settings import RunConfig
from studio.core.data.issues import DataError, DataIssue


def check_run(config: RunConfig) -> None:
    """Raise ConfigError (naming the key) or DataError (naming the file and its first bad row) for anything that
    would stop this run before its first step; return when it can start."""
    from studio.core.config.preflight import check_sources
    from studio.core.data.grow.record import split_refusal
    from studio.core.data.loading import training_data
    from studio.core.train.init_adapter import resolve_init_adapter
    from studio.core.methods.trainers import method_training

    check_sources(config)
    if (leak := split_refusal(config.data)) is not None:  # a grown file is evaluated on its held-out originals
        raise DataError(leak)
    method = method_training(config)  # an unknown method is a ConfigError naming training.method
    resolve_init_adapter(config)  # missing, not a run or an adapter, trained on another quantisation
    method.check()  # what only its trainer half knows (GRPO: an unknown metric, a pattern that does not compile)
    if method.reads_own_records:
        method.read(emit=None)  # the method's reader, its checks (both labels, expected replies) included
        return
    training_data(config.data)
    if config.data.eval_file:
        training_data(config.data, config.data.eval_file)


def refusal_line(error: DataError, *, skip_bad_rows: str, encoding: Callable[[str], str] | None = None) -> str:
    """A DataError in one line for whoever started the run: `skip_bad_rows` says how to skip bad rows where they
    are (e.g. "add --skip-bad-rows"); `encoding(codec)` how to choose an encoding there (None: the data.encoding
    setting, as the reader's own hint says)."""
    first = str(error).splitlines()[0] if str(error).strip() else "the data cannot be read"
    if not error.issues:
        return first
    issue = error.issues[0]
    reason = issue.reason
    if encoding is not None:
        reason = _ENCODING_SETTING.sub(lambda found: encoding(found["codec"]), reason)
    if first == str(issue):  # one located problem (a byte not in the encoding, a broken JSON document)
        return str(DataIssue(issue.path, issue.line, reason, issue.unit))
    counted = _BAD_ROWS.match(first)
    if counted is None:  # "no usable examples (N bad rows)" and the like: the first bad row says why
        return f"{first}; the first bad {issue.unit}: {DataIssue(issue.path, issue.line, reason, issue.unit)}"
    # The first bad row in the readers' `file:line: reason` form, then how many there are and what to do.
    rows = f"{error.total:,} bad row{'s' if error.total != 1 else ''}{counted['method'] or ''} in all"
    them = "them" if error.total != 1 else "it"
    return (f"{DataIssue(issue.path, issue.line, reason, issue.unit)}; {rows}: fix or remove {them}, or "
            f"{skip_bad_rows} to train on the others")


_ENCODING_SETTING = re.compile(r'data\.encoding = "(?P<codec>[^"]+)"')
"""How the reader's hint names the encoding to choose (data.encoding_error's "Read it as … (data.encoding = "…")")."""
_BAD_ROWS = re.compile(r"^(?P<path>.*): \d+ bad row\(s\)(?P<method> for \w+)?$")
"""The readers' "FILE: N bad row(s)" (SFT) and "FILE: N bad row(s) for dpo" (the other methods)."""
