"""Qt-free core of Finetune Studio (never imports PySide6, pyqtgraph or superqt)."""
