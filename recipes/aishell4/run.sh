#!/usr/bin/env bash
# Usage: recipes/aishell4/run.sh --corpus-dir DIR [--dev-sessions N] [--data DIR]
#            [--exp-root DIR] [any option of recipes/paper.sh and recipes/run.sh]
#
# AISHELL-4 alone: prepare data/aishell4/{train,dev,test} with 'slimdiar prepare aishell4
# --extract-channel' (channel 0 of the 8-channel array copied to mono files; dev = training
# sessions held out, never trained on) unless it exists, then the runs of the paper's table
# (recipes/paper.sh) into exp/aishell4.
#
#   --corpus-dir DIR    holds train_L, train_M, train_S and test (wav/*.flac, TextGrid/*.TextGrid)
#   --dev-sessions N    training sessions held out as dev (default 10)
#   --data DIR          data directories (default data/aishell4)
#   --exp-root DIR      experiments (default exp/aishell4)
#
# Example:
#   recipes/aishell4/run.sh --corpus-dir /corpora/aishell4 \
#       --wavlm-base-plus models/wavlm-base-plus --wavlm-large models/wavlm-large \
#       --ngpu 4 --device cuda
set -euo pipefail

# The options and the steps are those of recipes/corpus.sh, which every corpus shares.
exec "$(dirname "$0")/../corpus.sh" aishell4 "$0" "--dev-sessions" "--extract-channel" "$@"
