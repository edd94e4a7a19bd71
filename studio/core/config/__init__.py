"""What a run is asked to do: the run config (dataclasses whose metadata is the form's help, choices and
ranges), its TOML files, presets per card, the generated reference (docs/CONFIG.md) and the preflight
checks that refuse a config before a run folder exists."""
