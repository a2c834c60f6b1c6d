#!/usr/bin/env bash
# Usage: recipes/corpus.sh CORPUS SCRIPT PREPARE_OPTIONS PREPARE_FLAGS [option ...]
#
# What the single-corpus recipes (recipes/ami/run.sh, recipes/aishell4/run.sh,
# recipes/alimeeting/run.sh) share; run those, not this. It reads the options of SCRIPT (whose
# header is its --help), prepares DATA/{train,dev,test} (default data/CORPUS) with
#   slimdiar prepare CORPUS --corpus-dir DIR --out DATA PREPARE_FLAGS [PREPARE_OPTIONS given]
# unless DATA/test/wav.scp exists, then runs the paper's table (recipes/paper.sh) with channel 0
# into EXP_ROOT (default exp/CORPUS). Every other option goes to recipes/paper.sh.
#
#   PREPARE_OPTIONS  space-separated options of SCRIPT that go to 'slimdiar prepare' with their value
#   PREPARE_FLAGS    space-separated flags always given to 'slimdiar prepare'
set -euo pipefail

corpus=$1
script=$2
read -r -a prepare_options <<< "$3"
read -r -a prepare_flags <<< "$4"
shift 4
name="recipes/$corpus/run.sh"
repo=$(cd "$(dirname "$0")/.." && pwd)
data=data/$corpus
exp_root=exp/$corpus
corpus_dir=""
prepare_args=()
passed=()
dry_run=false
die() {
    echo "$name: error: $*" >&2
    exit 1
}
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) sed -n '2,/^set -euo pipefail/p' "$script" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        --dry-run) dry_run=true; passed+=("$1"); shift; continue ;;
        --allow-ge2e) passed+=("$1"); shift; continue ;;
    esac
    [ $# -ge 2 ] || die "option $1 needs a value"
    case " ${prepare_options[*]-} " in
        *" $1 "*) prepare_args+=("$1" "$2"); shift 2; continue ;;
    esac
    case "$1" in
        --corpus-dir) corpus_dir=$2 ;;
        --data) data=$2 ;;
        --exp-root) exp_root=$2 ;;
        *) passed+=("$1" "$2") ;;
    esac
    shift 2
done

if [ ! -f "$data/test/wav.scp" ]; then
    [ -n "$corpus_dir" ] || die "--corpus-dir is required"
    prepare=(slimdiar prepare "$corpus" --corpus-dir "$corpus_dir" --out "$data"
             ${prepare_flags[@]+"${prepare_flags[@]}"} ${prepare_args[@]+"${prepare_args[@]}"})
    echo "+ ${prepare[*]}"
    $dry_run || "${prepare[@]}"
fi
"$repo/recipes/paper.sh" --train "$data/train" --dev "$data/dev" --test "$data/test" \
    --exp-root "$exp_root" --channel 0 ${passed[@]+"${passed[@]}"}
