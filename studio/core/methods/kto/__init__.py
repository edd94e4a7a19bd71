"""KTO: its settings half (settings.py) and its trainer half (trainer.py)."""
