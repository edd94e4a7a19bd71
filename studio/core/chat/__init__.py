"""Talking to a model: one loaded base with any number of adapters, streamed replies, and conversations read
from data files."""
