"""The text domain's entry points for the generic tools (see :mod:`cpc.domain`).

- config: :func:`cpc.text.config.load_train_config` (``domain: text``);
- model: :class:`cpc.text.model.CPCText`;
- data: ``<data_dir>/text/{train,valid}.txt`` (stage 0) and ``<data_dir>/lang/vocab.txt``
  (stage 1) as windows of consecutive sentences (:mod:`cpc.text.data`);
- probe tasks: none through ``local/probe.py``: the SentEval protocol (logistic regression,
  nested cross-validation) runs in ``egs/bookcorpus/local/senteval.py`` and writes its results
  where ``local/make_results.py`` reads them (task ``senteval``);
- results: :data:`cpc.text.results.SPEC`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from cpc.domain import Domain, PretrainData
from cpc.io import Pathlike, sha256_file
from cpc.text.config import TextTrainConfig, load_train_config
from cpc.text.corpus import CorpusError
from cpc.text.results import SPEC
from cpc.text.senteval import SentEvalError
from cpc.text.vocab import VocabError


def build_model(cfg: TextTrainConfig) -> Any:
    from cpc.text.model import build_model as build

    return build(cfg.model)


def build_data(cfg: TextTrainConfig, data_dir: Pathlike, env: Any = None) -> PretrainData:
    from cpc.text.data import (
        SentenceWindows,
        ValidWindows,
        check_vocab_size,
        data_identity,
        encode_books,
    )
    from cpc.text.vocab import Vocab

    data_dir = Path(data_dir)
    vocab_path = data_dir / "lang" / "vocab.txt"
    if not vocab_path.is_file():
        raise FileNotFoundError(f"{vocab_path} does not exist; run stages 0-1 first")
    vocab = Vocab.load(vocab_path)
    check_vocab_size(cfg, vocab, vocab_path)
    d = cfg.data
    window = d.context_sentences + cfg.model.prediction_steps
    train = SentenceWindows(
        encode_books(data_dir / "text" / "train.txt", vocab, d.max_tokens),
        window,
        d.batch_size,
        cfg.train.seed,
    )
    valid = None
    vpath = data_dir / "text" / "valid.txt"
    if d.valid_max_windows > 0 and vpath.is_file():
        valid = ValidWindows(
            encode_books(vpath, vocab, d.max_tokens), window, d.batch_size, d.valid_max_windows
        )
        if len(valid) == 0:
            logging.warning("the validation books give no full batch: no validation loss")
            valid = None
    identity = data_identity(data_dir)
    if cfg.model.init_from_word_vectors:  # the initial word embeddings are an input too
        identity["word_vectors"] = sha256_file(cfg.model.word_vectors)
    return PretrainData(train=train, valid=valid, identity=identity)


DOMAIN = Domain(
    name="text",
    description="text: CPC sentence embeddings on books (paper section 3.3)",
    load_config=load_train_config,
    build_model=build_model,
    build_data=build_data,
    run_only_keys=(),
    probe_tasks={},
    results=SPEC,
    errors=(CorpusError, VocabError, SentEvalError),
)
