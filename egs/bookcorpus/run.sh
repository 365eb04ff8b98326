#!/usr/bin/env bash
# CPC sentence embeddings on books (van den Oord et al., 2018, section 3.3), evaluated the
# SentEval way.
#
# Stages (numbers never change meaning):
#   0  books -> tokenised sentences, train/valid split (builds the embedded books and the
#      MR-like/CR-like tasks first without --corpus-dir / --senteval-dir) -> data/text/
#   1  vocabulary: the --vocab-size most frequent training words, with counts -> data/lang/
#   2  word vectors: gensim skip-gram on the training books, or --word2vec PATH; their rows
#      for the vocabulary words (model.init_from_word_vectors) -> data/w2v/
#   3  CPC pre-training with torchrun (DDP) -> exp/<tag>/
#   4  SentEval-protocol evaluation: CPC, random-init encoder, mean word vectors, bag of
#      words -> exp/<tag>/probe_senteval/<features>/results.json
#   5  results table -> exp/<tag>/RESULTS.md, results.json
#
# Usage: ./run.sh [options]      e.g. ./run.sh --stage 0 --stop-stage 5;  ./run.sh --tiny true
# A stage re-runs only when something it is made from changed: an option, the CONTENTS of the
# config, the seed, the input data, or an upstream stage's outputs; otherwise it is skipped.
# exp/<tag>/ is named after the config, a non-default seed and the overrides; its checkpoints
# record the data and settings they were trained on, and continuing them under other ones is
# refused (pass a new --tag, or --restart-exp true to move the old experiment aside).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

stage=0                 # first stage to run
stop_stage=5            # last stage to run
corpus_dir=""           # directory of plain-text books, one .txt per book (empty: the embedded Austen + KJV books)
valid_books=""          # comma-separated book names held out for the validation loss (empty: persuasion for the embedded books, else the last book by name)
senteval_dir=""         # SentEval data root (MR/, CR/, SUBJ/, MPQA/, TREC/ ...; empty: the embedded MR-like and CR-like tasks)
vocab_size=20000        # stage 1: words in the vocabulary (most frequent first)
word2vec=""             # stage 2: pretrained word2vec file (.bin or text) to use instead of training vectors on the books
w2v_dim=300             # stage 2: dimension of the trained word vectors
w2v_epochs=5            # stage 2: training epochs of the word vectors
seed=42                 # random seed (word vectors, training, evaluation folds)
config=conf/cpc_small.yaml   # training config (conf/cpc_paper.yaml, conf/cpc_small.yaml, conf/cpc_tiny.yaml)
overrides=""            # config overrides, space separated, e.g. "optim.lr=2e-4 train.max_steps=500"
tag=""                  # experiment name under exp/ (empty: config name [+ _seed<N> if not 42] [+ overrides hash])
restart_exp=false       # stage 3: if exp/<tag>/ holds checkpoints of other data/config/seed, rename it to exp/<tag>.old-<time> and train anew
nproc_per_node=""       # training processes per node (empty: number of GPUs, else 1)
nnodes=1                # number of nodes for multi-node training
node_rank=0             # this node's rank (multi-node)
rdzv_endpoint=""        # host:port of the rendezvous for multi-node training (empty: single node)
cpc_feature=z           # stage 4: CPC features: z (sentence encoder), c (GRU after the sentence), zc (both)
folds=10                # stage 4: outer cross-validation folds (MR, CR, SUBJ, MPQA)
inner_folds=5           # stage 4: inner cross-validation folds choosing the regularisation
c_grid=0.0000625,0.00025,0.001,0.004,0.016,0.0625,0.25,1,4,16  # stage 4: logistic-regression C values tried (powers of 4; below SentEval's 0.25-16 because the features are standardised; the bag of words chose 0.00025 and 0.0000625 on MR-like)
nj=2                    # stage 4: outer folds fitted in parallel
max_items=0             # stage 4: at most N items per task (0: all)
max_sentences=0         # stage 0: keep each book's first N sentences (0: all)
tiny=false              # true: a tiny run of every stage (conf/cpc_tiny.yaml, 300 sentences per book, 2000 words, 200 items per task) in data/tiny/

declare -r _seed_default=$seed
. utils/parse_options.sh
. ./path.sh
. ./cmd.sh
. utils/stage.sh

# ---- derived values ----
data=data
if [ "$tiny" = true ]; then
  data=data/tiny
  [ "$config" = conf/cpc_small.yaml ] && config=conf/cpc_tiny.yaml
  [ "$max_sentences" = 0 ] && max_sentences=300
  [ "$vocab_size" = 20000 ] && vocab_size=2000
  [ "$max_items" = 0 ] && max_items=200
  w2v_dim=32 w2v_epochs=1 inner_folds=3
fi
embedded=download/embedded
if [ -z "$corpus_dir" ]; then
  books=$embedded/books
  [ -z "$valid_books" ] && valid_books=persuasion
else
  books=$corpus_dir
fi
senteval_root=${senteval_dir:-$embedded/senteval}
if [ ! -f "$config" ]; then
  log "--config $config does not exist (choose one of: $(ls conf/*.yaml | tr '\n' ' '))"
  exit 1
fi
config_md5=$(md5sum <"$config" | cut -c1-12)
[ -z "$tag" ] && tag=$(default_tag "$config" "$seed" "$_seed_default" "$overrides")
[ -z "$nproc_per_node" ] && nproc_per_node=$(gpus_or_one)
exp=exp/$tag
data_marks=$data/.stages
exp_marks=$exp/.stages

# Content signature of a directory tree (or of a file), for stage identities.
tree_md5() {
  if [ -d "$1" ]; then
    (cd "$1" && find . -type f -not -path '*/.*' -print0 | sort -z | xargs -0 -r md5sum) | md5sum | cut -c1-16
  elif [ -f "$1" ]; then
    md5sum <"$1" | cut -c1-16
  else
    echo missing
  fi
}

# ---- stage 0: books -> tokenised sentences ----
if [ -z "$corpus_dir" ]; then
  corpus_opts="corpus=embedded"
else
  corpus_opts="corpus_dir=$(cd "$corpus_dir" 2>/dev/null && pwd -P || echo "$corpus_dir") corpus_md5=$(tree_md5 "$corpus_dir")"
fi
if begin_stage 0 "tokenise the books" $data_marks/stage0.done \
    "$corpus_opts valid_books=$valid_books max_sentences=$max_sentences"; then
  if [ -z "$corpus_dir" ] || [ -z "$senteval_dir" ]; then
    log "building the embedded books and MR-like/CR-like tasks in $embedded"
    python local/make_embedded_data.py --out-dir $embedded
  fi
  python local/prepare_corpus.py --corpus-dir "$books" --output-dir $data/text \
    --valid-books "$valid_books" --max-sentences-per-book "$max_sentences"
  end_stage $data/text/train.txt $data/text/valid.txt
fi

# ---- stage 1: vocabulary ----
if begin_stage 1 "vocabulary ($vocab_size words)" $data_marks/stage1.done \
    "vocab_size=$vocab_size text=$(stage_sig $data_marks/stage0.done)"; then
  python local/make_vocab.py --text $data/text/train.txt --output $data/lang/vocab.txt \
    --size "$vocab_size"
  end_stage $data/lang/vocab.txt
fi

# ---- stage 2: word vectors ----
if [ -n "$word2vec" ]; then w2v_opts="word2vec=$word2vec word2vec_md5=$(tree_md5 "$word2vec")"
else w2v_opts="dim=$w2v_dim epochs=$w2v_epochs seed=$seed"; fi
if begin_stage 2 "word vectors" $data_marks/stage2.done \
    "$w2v_opts text=$(stage_sig $data_marks/stage0.done) vocab=$(stage_sig $data_marks/stage1.done)"; then
  python local/word2vec.py --text $data/text/train.txt --output-dir $data/w2v \
    --word2vec "$word2vec" --dim "$w2v_dim" --epochs "$w2v_epochs" --seed "$seed" \
    --vocab $data/lang/vocab.txt
  end_stage $data/w2v/vectors.bin $data/w2v/vocab_vectors.npy
fi

# ---- stage 3: CPC pre-training (torchrun, DDP) ----
if begin_stage 3 "CPC pre-training ($tag)" $exp_marks/stage3.done \
    "config=$config config_md5=$config_md5 overrides=${overrides// /,} seed=$seed nproc=$nproc_per_node nnodes=$nnodes data=$(stage_sig $data_marks/stage0.done) vocab=$(stage_sig $data_marks/stage1.done) w2v=$(stage_sig $data_marks/stage2.done)"; then
  n_words=$(wc -l <$data/lang/vocab.txt)
  train_args=(--config "$config" --exp-dir $exp --data-dir $data --seed "$seed"
    --override model.vocab_size=$n_words model.word_vectors=$data/w2v/vocab_vectors.npy)
  # shellcheck disable=SC2206
  [ -n "$overrides" ] && train_args+=($overrides)
  train_exp 3 $exp torchrun "${train_args[@]}"
  end_stage $exp/best.pt
fi

# ---- stage 4: SentEval-protocol evaluation ----
feats="cpc random w2v_mean bow"
if begin_stage 4 "SentEval evaluation ($feats)" $exp_marks/stage4.done \
    "senteval_md5=$(tree_md5 "$senteval_root") cpc_feature=$cpc_feature folds=$folds inner_folds=$inner_folds c_grid=$c_grid max_items=$max_items seed=$seed train=$(stage_sig $exp_marks/stage3.done) w2v=$(stage_sig $data_marks/stage2.done) data=$(stage_sig $data_marks/stage0.done)"; then
  $cpu_cmd $exp/log/senteval.log python local/senteval.py --feature-types "${feats// /,}" \
    --senteval-dir "$senteval_root" --output-dir $exp/probe_senteval \
    --vocab $data/lang/vocab.txt --word2vec-dir $data/w2v --checkpoint $exp/best.pt \
    --cpc-feature "$cpc_feature" --folds "$folds" --inner-folds "$inner_folds" \
    --c-grid "$c_grid" --max-items "$max_items" --seed "$seed" --num-jobs "$nj"
  end_stage $(for f in $feats; do echo $exp/probe_senteval/$f/results.json; done)
fi

# ---- stage 5: results table ----
if begin_stage 5 "results table" $exp_marks/stage5.done \
    "evaluation=$(stage_sig $exp_marks/stage4.done)"; then
  python $CPC_ROOT/local/make_results.py --exp-dir $exp --tag "$tag"
  end_stage $exp/RESULTS.md $exp/results.json
  log "results: $exp/RESULTS.md"
fi
