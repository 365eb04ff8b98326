"""cpc-recipes: Contrastive Predictive Coding (van den Oord, Li, Vinyals 2018) as a library.

Domain-agnostic parts live at the top level (InfoNCE and negative samplers, the trainer with
DDP/checkpointing/resume, probes, feature writers, config loading, logging, atomic I/O); the
per-domain models and data live in subpackages (``cpc.audio``, ...).
"""

__version__ = "0.1.0"
