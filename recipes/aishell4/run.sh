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

repo=$(cd "$(dirname "$0")/../.." && pwd)
data=data/aishell4
exp_root=exp/aishell4
corpus_dir=""
prepare_args=()
passed=()
dry_run=false
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) sed -n '2,/^set -euo pipefail/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        --dry-run) dry_run=true; passed+=("$1"); shift; continue ;;
    esac
    [ $# -ge 2 ] || { echo "recipes/aishell4/run.sh: error: option $1 needs a value" >&2; exit 1; }
    case "$1" in
        --corpus-dir) corpus_dir=$2 ;;
        --dev-sessions) prepare_args+=("$1" "$2") ;;
        --data) data=$2 ;;
        --exp-root) exp_root=$2 ;;
        *) passed+=("$1" "$2") ;;
    esac
    shift 2
done

if [ ! -f "$data/test/wav.scp" ]; then
    [ -n "$corpus_dir" ] || { echo "recipes/aishell4/run.sh: error: --corpus-dir is required" >&2; exit 1; }
    echo "+ slimdiar prepare aishell4 --corpus-dir $corpus_dir --out $data --extract-channel ${prepare_args[*]-}"
    $dry_run || slimdiar prepare aishell4 --corpus-dir "$corpus_dir" --out "$data" \
        --extract-channel ${prepare_args[@]+"${prepare_args[@]}"}
fi
"$repo/recipes/paper.sh" --train "$data/train" --dev "$data/dev" --test "$data/test" \
    --exp-root "$exp_root" --channel 0 ${passed[@]+"${passed[@]}"}
