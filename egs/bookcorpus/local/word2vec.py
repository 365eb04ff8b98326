#!/usr/bin/env python3
"""Stage 2: word vectors for vocabulary expansion and the mean-word-vector baseline.

Without --word2vec: skip-gram vectors trained with gensim on --text (stage 0's train.txt),
deterministic for --seed (one worker, a fixed string hash). With --word2vec PATH: real
pretrained vectors (word2vec text/.bin or gensim .kv) are loaded and saved in word2vec's
binary format.
Output: OUTPUT_DIR/vectors.bin (word2vec binary format), OUTPUT_DIR/vocab_vectors.npy (with
--vocab: row i = the vector of vocabulary word i, NaN when there is none; the CPC model's
``model.init_from_word_vectors`` starts its word embeddings from it) and OUTPUT_DIR/info.json.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

from cpc.cli import HelpFormatter, positive_int
from cpc.io import atomic_open, atomic_path, write_json_atomic
from cpc.log import setup_logging
from cpc.text.corpus import read_sentences
from cpc.text.vocab import Vocab, VocabError
from cpc.text.wordvec import load_word2vec, train_word2vec, vocab_vectors


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--text", required=True, help="tokenised training sentences (train.txt)")
    p.add_argument("--output-dir", required=True, help="receives vectors.bin and info.json")
    p.add_argument("--word2vec", default="", help="pretrained vectors to import instead")
    p.add_argument("--vocab", default="", help="vocab.txt (stage 1): also write vocab_vectors.npy")
    p.add_argument("--dim", type=positive_int, default=300, help="vector size when training")
    p.add_argument("--epochs", type=positive_int, default=5, help="training epochs")
    p.add_argument(
        "--min-count", type=positive_int, default=1, help="words seen fewer times are left out"
    )
    p.add_argument("--seed", type=int, default=42, help="random seed")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    if not args.word2vec and not Path(args.text).is_file():
        logging.error(f"--text {args.text} does not exist; run stage 0 (corpus) first")
        return 1
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if args.word2vec:
        try:
            wv = load_word2vec(args.word2vec)
        except (OSError, ValueError) as e:
            logging.error(f"--word2vec {args.word2vec}: {e}")
            return 1
        source = f"pretrained: {args.word2vec}"
    else:
        sents = [s for b in read_sentences(args.text) for s in b]
        wv = train_word2vec(sents, args.dim, args.epochs, args.seed, args.min_count)
        source = f"gensim skip-gram on {args.text}"
    with atomic_path(out / "vectors.bin") as tmp:
        wv.save_word2vec_format(str(tmp), binary=True)
    info = {"source": source, "words": len(wv.key_to_index), "dim": wv.vector_size}
    if args.vocab:
        try:
            words = Vocab.load(args.vocab).words
        except (FileNotFoundError, VocabError) as e:
            logging.error(f"--vocab: {e}")
            return 1
        table = vocab_vectors(words, wv)
        with atomic_open(out / "vocab_vectors.npy", "wb") as f:
            np.save(f, table)
        info["vocab_words_with_vector"] = int((~np.isnan(table).any(1)).sum())
        info["vocab_words"] = len(words)
    info["time_s"] = round(time.time() - t0, 1)
    write_json_atomic(out / "info.json", info)
    logging.info(f"{info['words']} word vectors of {info['dim']} dims ({source}) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
