"""Qt-free core of Finetune Studio (never imports PySide6, pyqtgraph or superqt).

Packages, from the top down; each imports only those below it (the import-linter contracts in
pyproject.toml hold this, and docs/ARCHITECTURE.md gives each one's job):
sessions, train, export, eval, chat, plan, metrics, config, models, data, runs, system.
"""
