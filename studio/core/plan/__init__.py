"""Deciding before a run: the VRAM estimate with its breakdown and the speed-up plan (which fast kernels and
attention to use, and why)."""
