"""Configuration of CPC pre-training on text: model, data, optimiser, trainer.

A YAML file (``egs/bookcorpus/conf/*.yaml``) has ``domain: text`` and the sections ``model``,
``data``, ``optim`` and ``train``; :func:`load_train_config` reads it with ``key=value``
overrides and checks what the types cannot. ``model.vocab_size`` is the number of words of the
vocabulary stage (the recipe passes it from ``data/lang/vocab.txt``); the model adds two
entries, ``<pad>`` (0) and ``<unk>`` (1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cpc.config import ConfigError, load_config
from cpc.infonce import NegativeSamplingError, canonical_strategy
from cpc.optim import OptimConfig, validate_optim_config
from cpc.trainer import TrainerConfig

DOMAIN = "text"


@dataclass
class TextModelConfig:
    """The CPC sentence model (paper section 3.3 defaults) and its InfoNCE loss."""

    vocab_size: int = 20000  # words; the embedding table has vocab_size + 2 rows
    embed_dim: int = 620  # word embeddings
    embed_init: float = 0.1  # word embeddings start uniform in [-embed_init, embed_init]
    # true: word embeddings start from the word vectors of ``word_vectors`` instead (reduced to
    # embed_dim by PCA when they are wider), <unk> keeps the uniform start
    init_from_word_vectors: bool = False
    # (vocab_size, d) .npy, row i = the word vector of vocabulary word i (stage 2 writes
    # data/w2v/vocab_vectors.npy; run.sh passes it)
    word_vectors: str = ""
    # true: the word embeddings stay as they started (from the word vectors), only the
    # convolution, the GRU and the predictions train (as InferSent keeps GloVe fixed)
    freeze_word_embeddings: bool = False
    kernel_size: int = 3  # 1D convolution over the words of a sentence (odd, > 1)
    z_dim: int = 2400  # sentence embedding z (conv channels, ReLU, mean over real tokens)
    context_dim: int = 2400  # GRU over consecutive sentences -> c
    prediction_steps: int = 3  # K: sentences predicted ahead
    num_negatives: int = 0  # 0: all pairs (every sentence of the batch, all time steps)
    # cpc.infonce strategy; a window's group is its book: batch (any window of the batch),
    # same_group (only windows of the same book: no "which book" shortcut)
    negatives: str = "batch"
    # none: InfoNCE's targets are z itself (the paper); mlp: the targets are head(z), a
    # two-layer MLP (z_dim -> z_dim -> z_dim, ReLU) trained with the rest and used only by
    # the loss, while the GRU and the evaluation read z (SimCLR's projection head)
    target_head: str = "none"
    # share of a training sentence's real tokens replaced by <unk> (0: none); evaluation and
    # validation never drop words
    word_dropout: float = 0.0


@dataclass
class TextDataConfig:
    """Training windows of consecutive sentences of one book."""

    context_sentences: int = 6  # a window is context_sentences + K sentences
    batch_size: int = 64  # windows per process and micro-batch
    max_tokens: int = 50  # tokens kept per sentence (the rest is cut)
    valid_max_windows: int = 2048  # validation windows kept (whole batches)


@dataclass
class TextTrainConfig:
    """Everything ``local/train.py`` needs, one section per concern."""

    domain: str = DOMAIN
    model: TextModelConfig = field(default_factory=TextModelConfig)
    data: TextDataConfig = field(default_factory=TextDataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainerConfig = field(default_factory=TrainerConfig)


def validate_config(cfg: TextTrainConfig) -> None:
    """Raise ConfigError for combinations the types cannot express."""
    if cfg.domain != DOMAIN:
        raise ConfigError(f"domain {cfg.domain!r}: this is a text ({DOMAIN!r}) config")
    m, d = cfg.model, cfg.data
    if m.kernel_size < 2 or m.kernel_size % 2 == 0:
        raise ConfigError(
            f"model.kernel_size must be odd and > 1 (a convolution over neighbouring words, "
            f"centred), got {m.kernel_size}"
        )
    if m.embed_init <= 0:
        raise ConfigError(f"model.embed_init must be > 0, got {m.embed_init}")
    if m.init_from_word_vectors and not m.word_vectors:
        raise ConfigError(
            "model.init_from_word_vectors is true but model.word_vectors is empty; pass "
            "model.word_vectors=data/w2v/vocab_vectors.npy (run.sh does this from stage 2)"
        )
    if m.freeze_word_embeddings and not m.init_from_word_vectors:
        raise ConfigError(
            "model.freeze_word_embeddings keeps the word embeddings as they start, which is "
            "only useful with model.init_from_word_vectors=true; set both or neither"
        )
    for name in ("vocab_size", "embed_dim", "z_dim", "context_dim", "prediction_steps"):
        if getattr(m, name) < 1:
            raise ConfigError(f"model.{name} must be >= 1, got {getattr(m, name)}")
    if m.target_head not in ("none", "mlp"):
        raise ConfigError(f"model.target_head must be none or mlp, got {m.target_head!r}")
    if not 0.0 <= m.word_dropout < 1.0:
        raise ConfigError(f"model.word_dropout must be in [0, 1), got {m.word_dropout}")
    if m.num_negatives < 0:
        raise ConfigError(f"model.num_negatives must be >= 0 (0: all pairs), got {m.num_negatives}")
    try:
        m.negatives = canonical_strategy(m.negatives)
    except NegativeSamplingError as e:
        raise ConfigError(f"model.negatives: {e}") from e
    if d.context_sentences < 1 or d.batch_size < 1 or d.max_tokens < 1:
        raise ConfigError("data.context_sentences, data.batch_size, data.max_tokens must be >= 1")
    if d.valid_max_windows < 0:
        raise ConfigError("data.valid_max_windows must be >= 0 (0: no validation)")
    try:
        validate_optim_config(cfg.optim)
    except ValueError as e:
        raise ConfigError(str(e)) from e


def load_train_config(
    path: str | Path | None, overrides: list[str] | None = None
) -> TextTrainConfig:
    """Load and validate a training config (YAML + ``section.key=value`` overrides)."""
    cfg = load_config(TextTrainConfig, path, overrides)
    validate_config(cfg)
    return cfg
