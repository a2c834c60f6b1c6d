#!/usr/bin/env bash
# Usage: recipes/compound/run.sh --ami-dir DIR (--ami-rttm-dir DIR [--ami-uem-dir DIR] |
#            --ami-annotations-dir DIR) --aishell4-dir DIR [--aishell4-dev-sessions N]
#            --alimeeting-dir DIR
#            [--data DIR] [--exp-root DIR] [--skip-invalid] [--data-only]
#            [any option of recipes/paper.sh and recipes/run.sh]
#
# The paper's setting: train on AMI + AISHELL-4 + AliMeeting together (far field, channel 0,
# 288 h), validate on their development sets, test on each test set. Prepares
# DATA/{ami,aishell4,alimeeting}/{train,dev,test} with 'slimdiar prepare' where missing
# (AISHELL-4 and AliMeeting with channel 0 copied to mono files), concatenates the training and
# development sets into DATA/compound/{train,dev} (wav.scp paths are absolute), checks them with
# 'slimdiar data check', then runs the paper's table (recipes/paper.sh) into exp/compound.
# --skip-invalid is passed to 'slimdiar prepare' (skip incomplete or malformed recordings);
# --data-only stops after the data directories.
#
# Example:
#   recipes/compound/run.sh --ami-dir /corpora/ami \
#       --ami-rttm-dir AMI-diarization-setup/only_words/rttms \
#       --ami-uem-dir AMI-diarization-setup/uems \
#       --aishell4-dir /corpora/aishell4 --alimeeting-dir /corpora/alimeeting \
#       --wavlm-base-plus models/wavlm-base-plus --wavlm-large models/wavlm-large \
#       --ngpu 4 --device cuda
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
data=data
exp_root=exp/compound
ami_dir=""
aishell4_dir=""
alimeeting_dir=""
ami_args=()
aishell4_args=()
passed=()
dry_run=false
data_only=false
skip_invalid=()
die() {
    echo "recipes/compound/run.sh: error: $*" >&2
    exit 1
}
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) sed -n '2,/^set -euo pipefail/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        --dry-run) dry_run=true; passed+=("$1"); shift; continue ;;
        --allow-ge2e) passed+=("$1"); shift; continue ;;
        --data-only) data_only=true; shift; continue ;;
        --skip-invalid) skip_invalid=(--skip-invalid); shift; continue ;;
    esac
    [ $# -ge 2 ] || die "option $1 needs a value"
    case "$1" in
        --ami-dir) ami_dir=$2 ;;
        --ami-rttm-dir) ami_args+=(--rttm-dir "$2") ;;
        --ami-uem-dir) ami_args+=(--uem-dir "$2") ;;
        --ami-annotations-dir) ami_args+=(--annotations-dir "$2") ;;
        --aishell4-dir) aishell4_dir=$2 ;;
        --aishell4-dev-sessions) aishell4_args+=(--dev-sessions "$2") ;;
        --alimeeting-dir) alimeeting_dir=$2 ;;
        --data) data=$2 ;;
        --exp-root) exp_root=$2 ;;
        *) passed+=("$1" "$2") ;;
    esac
    shift 2
done

# prepare CORPUS CORPUS_DIR ARGS...: slimdiar prepare, unless DATA/CORPUS/test exists.
prepare() {
    local corpus=$1 corpus_dir=$2
    shift 2
    if [ ! -f "$data/$corpus/test/wav.scp" ]; then
        [ -n "$corpus_dir" ] || die "--$corpus-dir is required to prepare $corpus"
        echo "+ slimdiar prepare $corpus --corpus-dir $corpus_dir --out $data/$corpus $*"
        $dry_run || slimdiar prepare "$corpus" --corpus-dir "$corpus_dir" --out "$data/$corpus" \
            ${skip_invalid[@]+"${skip_invalid[@]}"} "$@"
    fi
}
prepare ami "$ami_dir" ${ami_args[@]+"${ami_args[@]}"}
prepare aishell4 "$aishell4_dir" --extract-channel ${aishell4_args[@]+"${aishell4_args[@]}"}
prepare alimeeting "$alimeeting_dir" --extract-channel

for subset in train dev; do
    out=$data/compound/$subset
    if [ ! -f "$out/wav.scp" ]; then
        echo "+ concatenate $data/{ami,aishell4,alimeeting}/$subset into $out"
        if ! $dry_run; then
            mkdir -p "$out"
            for file in wav.scp rttm uem; do
                cat "$data/ami/$subset/$file" "$data/aishell4/$subset/$file" \
                    "$data/alimeeting/$subset/$file" > "$out/.$file.tmp"
                mv "$out/.$file.tmp" "$out/$file"
            done
            slimdiar data check "$out" --channel 0 --max-rows 0
        fi
    fi
done
if $data_only; then
    exit 0
fi

"$repo/recipes/paper.sh" --train "$data/compound/train" --dev "$data/compound/dev" \
    --test "$data/ami/test" --test "$data/aishell4/test" --test "$data/alimeeting/test" \
    --exp-root "$exp_root" --channel 0 ${passed[@]+"${passed[@]}"}
