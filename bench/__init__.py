"""peft-bench: a benchmark and reproduction suite for prompt-based parameter-efficient fine-tuning.

The engine: CLI, configuration, backbones, data pipeline, training loop, runner and records.
Heavy libraries (torch, transformers, datasets) are imported lazily so that ``--help`` and
``list`` answer quickly.
"""

__version__ = "0.1.0"
