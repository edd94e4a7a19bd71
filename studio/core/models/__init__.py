"""The base model and its adapters on disk: where a model comes from (a folder, the HF cache, a Hub download),
its linear layer names, adapter folders, and loading a base exactly as a run trained on it."""
