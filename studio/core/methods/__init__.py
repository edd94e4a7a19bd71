"""The training methods, one folder each (sft, dpo, orpo, kto, grpo), every one in two halves.

`<method>/settings.py` is the low half: the method's own settings (its TOML section, with help, choices and
ranges in field metadata), the data shape it reads, the live metrics its plots draw, its title. `config.settings`
builds the run config from them, so this half sits below `config` and never imports torch, transformers or TRL.
`registry` is what the rest of the studio asks (the config, the sessions and through them the tabs, the memory
estimate, the presets).

`<method>/trainer.py` is the high half: its TRL trainer class, the trainer's config and extra arguments (GRPO's
reward functions), and how its data file is read for training. `train.run` reaches it through `trainers`, so this
half sits just below `train`. pyproject.toml's layers contract places each half.
"""
