#!/usr/bin/env bash
# Usage: recipes/alimeeting/run.sh --corpus-dir DIR [--data DIR] [--exp-root DIR]
#            [any option of recipes/paper.sh and recipes/run.sh]
#
# AliMeeting alone: prepare data/alimeeting/{train,dev,test} (far field: Train_Ali_far,
# Eval_Ali_far as dev, Test_Ali_far) with 'slimdiar prepare alimeeting --extract-channel'
# (channel 0 of the 8-channel array copied to mono files) unless it exists, then the runs of
# the paper's table (recipes/paper.sh) into exp/alimeeting.
#
#   --corpus-dir DIR    holds Train_Ali_far (or Train_Ali/Train_Ali_far), Eval_Ali/Eval_Ali_far,
#                       Test_Ali/Test_Ali_far, each with audio_dir/ and textgrid_dir/
#   --data DIR          data directories (default data/alimeeting)
#   --exp-root DIR      experiments (default exp/alimeeting)
#
# Example:
#   recipes/alimeeting/run.sh --corpus-dir /corpora/alimeeting \
#       --wavlm-base-plus models/wavlm-base-plus --wavlm-large models/wavlm-large \
#       --ngpu 4 --device cuda
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
data=data/alimeeting
exp_root=exp/alimeeting
corpus_dir=""
passed=()
dry_run=false
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) sed -n '2,/^set -euo pipefail/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        --dry-run) dry_run=true; passed+=("$1"); shift; continue ;;
    esac
    [ $# -ge 2 ] || { echo "recipes/alimeeting/run.sh: error: option $1 needs a value" >&2; exit 1; }
    case "$1" in
        --corpus-dir) corpus_dir=$2 ;;
        --data) data=$2 ;;
        --exp-root) exp_root=$2 ;;
        *) passed+=("$1" "$2") ;;
    esac
    shift 2
done

if [ ! -f "$data/test/wav.scp" ]; then
    [ -n "$corpus_dir" ] || { echo "recipes/alimeeting/run.sh: error: --corpus-dir is required" >&2; exit 1; }
    echo "+ slimdiar prepare alimeeting --corpus-dir $corpus_dir --out $data --extract-channel"
    $dry_run || slimdiar prepare alimeeting --corpus-dir "$corpus_dir" --out "$data" \
        --extract-channel
fi
"$repo/recipes/paper.sh" --train "$data/train" --dev "$data/dev" --test "$data/test" \
    --exp-root "$exp_root" --channel 0 ${passed[@]+"${passed[@]}"}
