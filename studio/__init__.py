"""Finetune Studio: a desktop app for LoRA/QLoRA fine-tuning."""
