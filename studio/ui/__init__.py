"""Qt user interface of Finetune Studio."""
