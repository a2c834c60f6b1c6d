#!/usr/bin/env bash
# Usage: recipes/ami/run.sh --corpus-dir DIR (--rttm-dir DIR [--uem-dir DIR] | --annotations-dir DIR)
#            [--data DIR] [--exp-root DIR] [any option of recipes/paper.sh and recipes/run.sh]
#
# AMI alone: prepare data/ami/{train,dev,test} (single distant microphone Array1-01,
# Full-corpus-ASR partition) with 'slimdiar prepare ami' unless it exists, then the runs of the
# paper's table (recipes/paper.sh) with channel 0, into exp/ami.
#
#   --corpus-dir DIR       holds amicorpus/<meeting>/audio/<meeting>.Array1-01.wav
#   --rttm-dir DIR         AMI-diarization-setup/only_words/rttms  (the usual references)
#   --uem-dir DIR          AMI-diarization-setup/uems
#   --annotations-dir DIR  or: the NXT manual annotations (ami_public_manual_1.6.2)
#   --data DIR             data directories (default data/ami)
#   --exp-root DIR         experiments (default exp/ami)
#
# Example:
#   recipes/ami/run.sh --corpus-dir /corpora/ami \
#       --rttm-dir AMI-diarization-setup/only_words/rttms --uem-dir AMI-diarization-setup/uems \
#       --wavlm-base-plus models/wavlm-base-plus --wavlm-large models/wavlm-large \
#       --ngpu 4 --device cuda
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
data=data/ami
exp_root=exp/ami
corpus_dir=""
prepare_args=()
passed=()
dry_run=false
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) sed -n '2,/^set -euo pipefail/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        --dry-run) dry_run=true; passed+=("$1"); shift; continue ;;
    esac
    [ $# -ge 2 ] || { echo "recipes/ami/run.sh: error: option $1 needs a value" >&2; exit 1; }
    case "$1" in
        --corpus-dir) corpus_dir=$2 ;;
        --rttm-dir|--uem-dir|--annotations-dir) prepare_args+=("$1" "$2") ;;
        --data) data=$2 ;;
        --exp-root) exp_root=$2 ;;
        *) passed+=("$1" "$2") ;;
    esac
    shift 2
done

if [ ! -f "$data/test/wav.scp" ]; then
    [ -n "$corpus_dir" ] || { echo "recipes/ami/run.sh: error: --corpus-dir is required" >&2; exit 1; }
    echo "+ slimdiar prepare ami --corpus-dir $corpus_dir --out $data ${prepare_args[*]-}"
    $dry_run || slimdiar prepare ami --corpus-dir "$corpus_dir" --out "$data" \
        ${prepare_args[@]+"${prepare_args[@]}"}
fi
"$repo/recipes/paper.sh" --train "$data/train" --dev "$data/dev" --test "$data/test" \
    --exp-root "$exp_root" --channel 0 ${passed[@]+"${passed[@]}"}
