#!/usr/bin/env bash
# Usage: recipes/paper.sh --train DIR --dev DIR --test DIR [--test DIR ...] --exp-root DIR
#            [--wavlm-base-plus CKPT] [--wavlm-large CKPT] [--models "base-plus large"]
#            [--sparsities "0.8 0.9"] [--orders "finetune-first prune-first"] [--dry-run]
#            [any option of recipes/run.sh: --ngpu N --device cuda --embedding PATH
#             --allow-ge2e --channel K --stage N --stop-stage M --finetune-set K=V ...]
#
# The runs behind the paper's table for one training set: for each WavLM (Base+ with the
# bundled configs wavlm-base-plus and prune-wavlm-base-plus, Large with wavlm-large and
# prune-wavlm-large), each order and each
# sparsity, recipes/run.sh into EXP_ROOT/<model>/<order>-s<sparsity>/. Stage 0 (fine-tuning the
# full model) runs once per model, in the first finetune-first run, and the other
# finetune-first runs reuse it; that fine-tuned model is also diarized and scored on its own
# (the 0 % row) into EXP_ROOT/<model>/unpruned/.
#
# Example:
#   recipes/paper.sh --train data/compound/train --dev data/compound/dev \
#       --test data/ami/test --test data/aishell4/test --test data/alimeeting/test \
#       --exp-root exp/compound --wavlm-base-plus models/wavlm-base-plus \
#       --wavlm-large models/wavlm-large --ngpu 4 --device cuda
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
train=""
dev=""
tests=()
exp_root=""
wavlm_base_plus=""
wavlm_large=""
models="base-plus large"
sparsities="0.8 0.9"
orders="finetune-first prune-first"
stop_stage=4
passed=()

die() {
    echo "recipes/paper.sh: error: $*" >&2
    exit 1
}

while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) sed -n '2,/^set -euo pipefail/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        --dry-run|--allow-ge2e) passed+=("$1"); shift; continue ;;
    esac
    [ $# -ge 2 ] || die "option $1 needs a value (see --help)"
    case "$1" in
        --train) train=$2 ;;
        --dev) dev=$2 ;;
        --test) tests+=(--test "$2") ;;
        --exp-root) exp_root=$2 ;;
        --wavlm-base-plus) wavlm_base_plus=$2 ;;
        --wavlm-large) wavlm_large=$2 ;;
        --models) models=$2 ;;
        --sparsities) sparsities=$2 ;;
        --orders) orders=$2 ;;
        --stop-stage) stop_stage=$2; passed+=("$1" "$2") ;;
        *) passed+=("$1" "$2") ;;
    esac
    shift 2
done
[ -n "$train" ] && [ -n "$dev" ] && [ ${#tests[@]} -gt 0 ] && [ -n "$exp_root" ] \
    || die "--train, --dev, --test and --exp-root are required"

for model in $models; do
    case "$model" in
        base-plus) wavlm=$wavlm_base_plus ;;
        large) wavlm=$wavlm_large ;;
        *) die "unknown model '$model' (base-plus or large)" ;;
    esac
    [ -n "$wavlm" ] || die "--wavlm-$model is required"
    finetuned=""
    for order in $orders; do
        for sparsity in $sparsities; do
            exp=$exp_root/$model/$order-s$sparsity
            reuse=()
            if [ "$order" = finetune-first ] && [ -n "$finetuned" ]; then
                reuse=(--finetuned "$finetuned")
            fi
            echo "=== $model, $order, sparsity $sparsity: $exp"
            "$repo/recipes/run.sh" --order "$order" --wavlm "$wavlm" \
                --config "wavlm-$model" --sparsity "$sparsity" \
                --prune-config "prune-wavlm-$model" \
                --train "$train" --dev "$dev" "${tests[@]}" --exp "$exp" \
                ${reuse[@]+"${reuse[@]}"} ${passed[@]+"${passed[@]}"}
            if [ "$order" = finetune-first ] && [ -z "$finetuned" ]; then
                finetuned=$exp/stage0-finetune/best
            fi
        done
    done
    if [ -n "$finetuned" ] && [ "$stop_stage" -ge 4 ]; then
        echo "=== $model, unpruned (0 %): $exp_root/$model/unpruned"
        "$repo/recipes/run.sh" --exp "$exp_root/$model/unpruned" "${tests[@]}" \
            ${passed[@]+"${passed[@]}"} --stage 4 --stop-stage 4 --final-model "$finetuned"
    fi
done
