"""Measure what QLoRA fine-tuning does to a language model on a task, example by example."""

__version__ = "0.1.0"
