#!/usr/bin/env bash
# Usage: recipes/run.sh [options] --train DIR --dev DIR --test DIR [--test DIR ...] --exp EXP_DIR
#
# The stages of "fine-tune before structured pruning" for one WavLM, one sparsity and one order,
# then diarization and scoring of the test sets. Only the slimdiar command line is called.
#
#   order finetune-first (the paper):
#     stage 0  fine-tune WavLM in the diarization model          EXP/stage0-finetune/best
#     stage 1  prune it, teacher = the fine-tuned WavLM          EXP/stage1-prune/pruned
#     stage 2  further distillation from that teacher            EXP/stage2-distill/best
#     stage 3  fine-tune the pruned WavLM with a fresh head      EXP/stage3-finetune/best
#   order prune-first (the baseline: prune before fine-tune):
#     stage 0  (nothing)
#     stage 1  prune the pre-trained WavLM, teacher = itself      EXP/stage1-prune/pruned
#     stage 2  further distillation from the pre-trained WavLM   EXP/stage2-distill/best
#     stage 3  fine-tune the pruned WavLM with a fresh head      EXP/stage3-finetune/best
#   stage 4  diarize every --test set with the final model       EXP/diarize/<name>/*.rttm
#            and score it (DER, collar 0, overlap scored)         EXP/der/<name>.json
#
# A stage whose result exists is skipped; a stage interrupted mid-way resumes from its last
# checkpoint. Restart anywhere with --stage N --stop-stage M.
#
# Options:
#   --order ORDER          finetune-first (default) or prune-first
#   --wavlm CKPT           pre-trained WavLM: Hugging Face dir, original .pt or slimdiar dir
#   --config TOML          fine-tuning config of stages 0 and 3: a file or the name of a
#                          bundled config (default: wavlm-base-plus)
#   --prune-config TOML    optional config of stage 1;  --distill-config TOML: of stage 2
#   --sparsity S           target sparsity of stage 1 (default 0.8)
#   --train/--dev DIR      training and validation data directories
#   --test DIR             test data directory (repeatable)
#   --exp DIR              experiment directory of this run
#   --finetuned CKPT       use this fine-tuned model as the stage-0 result (share stage 0
#                          between sparsities)
#   --final-model CKPT     diarize with this model in stage 4 instead of the stage-3 result
#   --ngpu N               GPUs per training stage (N > 1: torchrun --nproc_per_node N)
#   --channel K            read channel K of multi-channel audio in training (data.channel)
#   --embedding PATH       the WeSpeaker ResNet34 speaker embedding of stage 4, as the paper's
#                          recipe uses (pyannote/wespeaker-voxceleb-resnet34-LM pytorch_model.bin
#                          or WeSpeaker's avg_model.pt); required for stage 4, which then
#                          clusters with its threshold 0.70 and minimum cluster size 30
#   --allow-ge2e           run stage 4 without it, with slimdiar's GE2E embedding and the
#                          model's own clustering settings (not the paper's system)
#   --device DEV           cpu or cuda for stage 4 (default cpu)
#   --finetune-set K=V     extra --set for stages 0 and 3 (repeatable; also --prune-set,
#                          --distill-set)
#   --stage N --stop-stage M   run stages N..M (default 0..4)
#   --dry-run              print the commands instead of running them
#
# Example:
#   recipes/run.sh --wavlm models/wavlm-base-plus --config wavlm-base-plus \
#       --sparsity 0.8 --train data/compound/train --dev data/compound/dev \
#       --test data/ami/test --test data/aishell4/test --test data/alimeeting/test \
#       --exp exp/base-plus/finetune-first-s0.8 --ngpu 4 --device cuda
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
order=finetune-first
wavlm=""
config=wavlm-base-plus
prune_config=""
distill_config=""
sparsity=0.8
train=""
dev=""
tests=()
exp=""
finetuned=""
final_model=""
ngpu=1
channel=""
embedding=""
device=cpu
finetune_sets=()
prune_sets=()
distill_sets=()
stage=0
stop_stage=4
dry_run=false
allow_ge2e=false

usage() {
    sed -n '2,/^set -euo pipefail/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

die() {
    echo "recipes/run.sh: error: $*" >&2
    exit 1
}

while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --dry-run) dry_run=true; shift; continue ;;
        --allow-ge2e) allow_ge2e=true; shift; continue ;;
    esac
    [ $# -ge 2 ] || die "option $1 needs a value (see --help)"
    case "$1" in
        --order) order=$2 ;;
        --wavlm) wavlm=$2 ;;
        --config) config=$2 ;;
        --prune-config) prune_config=$2 ;;
        --distill-config) distill_config=$2 ;;
        --sparsity) sparsity=$2 ;;
        --train) train=$2 ;;
        --dev) dev=$2 ;;
        --test) tests+=("$2") ;;
        --exp) exp=$2 ;;
        --finetuned) finetuned=$2 ;;
        --final-model) final_model=$2 ;;
        --ngpu) ngpu=$2 ;;
        --channel) channel=$2 ;;
        --embedding) embedding=$2 ;;
        --device) device=$2 ;;
        --finetune-set) finetune_sets+=(--set "$2") ;;
        --prune-set) prune_sets+=(--set "$2") ;;
        --distill-set) distill_sets+=(--set "$2") ;;
        --stage) stage=$2 ;;
        --stop-stage) stop_stage=$2 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
    shift 2
done

case "$order" in finetune-first|prune-first) ;; *) die "--order must be finetune-first or prune-first, not '$order'" ;; esac
[[ "$ngpu" =~ ^[1-9][0-9]*$ ]] || die "--ngpu must be a positive integer, not '$ngpu'"
[[ "$stage" =~ ^[0-4]$ && "$stop_stage" =~ ^[0-4]$ ]] || die "--stage and --stop-stage must be 0..4"
[ -n "$exp" ] || die "--exp is required"
if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 0 ]; then
    [ -n "$train" ] && [ -n "$dev" ] || die "--train and --dev are required for stages 0-3"
fi
if [ "$stop_stage" -ge 4 ]; then
    [ ${#tests[@]} -gt 0 ] || die "--test is required for stage 4"
    case "$embedding" in
        ""|ge2e) [ "$allow_ge2e" = true ] || die "stage 4 needs the WeSpeaker ResNet34 embedding \
of the paper's recipe: --embedding PATH (pyannote/wespeaker-voxceleb-resnet34-LM pytorch_model.bin \
or WeSpeaker avg_model.pt), or --allow-ge2e to diarize with GE2E instead" ;;
    esac
fi

# Training stages run under torchrun on several GPUs.
if [ "$ngpu" -gt 1 ]; then
    train_cmd=(torchrun --nproc_per_node "$ngpu" -m slimdiar)
else
    train_cmd=(slimdiar)
fi
data_sets=()
if [ -n "$channel" ]; then
    data_sets=(--set "data.channel=$channel")
fi

run() {
    printf "+"; printf " %q" "$@"; printf "\n"
    if ! $dry_run; then
        "$@"
    fi
}

# do_stage N: whether stage N is inside --stage..--stop-stage.
do_stage() {
    [ "$stage" -le "$1" ] && [ "$1" -le "$stop_stage" ]
}

# resume_flag DIR: --resume when DIR holds an interrupted run.
resume_flag() {
    if [ -d "$1/checkpoints" ]; then echo --resume; fi
}

optional_config() {
    if [ -n "$1" ]; then echo "--config $1"; fi
}

ft_dir=$exp/stage0-finetune
prune_dir=$exp/stage1-prune
distill_dir=$exp/stage2-distill
final_dir=$exp/stage3-finetune
teacher=${finetuned:-$ft_dir/best}
if [ "$order" = prune-first ]; then
    teacher=$wavlm
fi

if do_stage 0; then
    if [ "$order" = prune-first ]; then
        echo "stage 0: nothing to do in the prune-first order"
    elif [ -n "$finetuned" ]; then
        echo "stage 0: using the fine-tuned model $finetuned"
    elif [ -d "$ft_dir/best" ]; then
        echo "stage 0: $ft_dir/best exists, skipped"
    else
        [ -n "$wavlm" ] || die "--wavlm is required for stage 0"
        echo "stage 0: fine-tune $wavlm"
        # shellcheck disable=SC2046
        run "${train_cmd[@]}" finetune --config "$config" --backbone "$wavlm" \
            --train "$train" --dev "$dev" --out "$ft_dir" $(resume_flag "$ft_dir") \
            ${data_sets[@]+"${data_sets[@]}"} ${finetune_sets[@]+"${finetune_sets[@]}"}
    fi
fi

if do_stage 1; then
    if [ -d "$prune_dir/pruned" ]; then
        echo "stage 1: $prune_dir/pruned exists, skipped"
    else
        [ -n "$teacher" ] || die "--wavlm is required for stage 1 of the prune-first order"
        echo "stage 1: prune to sparsity $sparsity, teacher $teacher"
        # shellcheck disable=SC2046
        run "${train_cmd[@]}" prune --teacher "$teacher" --sparsity "$sparsity" \
            --train "$train" --dev "$dev" --out "$prune_dir" $(optional_config "$prune_config") \
            $(resume_flag "$prune_dir") \
            ${data_sets[@]+"${data_sets[@]}"} ${prune_sets[@]+"${prune_sets[@]}"}
    fi
fi

if do_stage 2; then
    if [ -d "$distill_dir/best" ]; then
        echo "stage 2: $distill_dir/best exists, skipped"
    else
        echo "stage 2: further distillation of $prune_dir/pruned from $teacher"
        # shellcheck disable=SC2046
        run "${train_cmd[@]}" distill --student "$prune_dir/pruned" --teacher "$teacher" \
            --train "$train" --dev "$dev" --out "$distill_dir" \
            $(optional_config "$distill_config") $(resume_flag "$distill_dir") \
            ${data_sets[@]+"${data_sets[@]}"} ${distill_sets[@]+"${distill_sets[@]}"}
    fi
fi

if do_stage 3; then
    if [ -d "$final_dir/best" ]; then
        echo "stage 3: $final_dir/best exists, skipped"
    else
        echo "stage 3: fine-tune the pruned WavLM $distill_dir/best with a fresh head"
        # shellcheck disable=SC2046
        run "${train_cmd[@]}" finetune --config "$config" --backbone "$distill_dir/best" \
            --train "$train" --dev "$dev" --out "$final_dir" $(resume_flag "$final_dir") \
            --set trainer.max_epochs=20 --set trainer.patience=5 \
            ${data_sets[@]+"${data_sets[@]}"} ${finetune_sets[@]+"${finetune_sets[@]}"}
    fi
fi

if do_stage 4; then
    model=${final_model:-$final_dir/best}
    embedding_args=()
    case "$embedding" in
        "") ;;
        ge2e) embedding_args=(--embedding ge2e) ;;
        # the AHC settings of the paper's recipe belong to the ResNet34 embedding
        *) embedding_args=(--embedding "$embedding" --threshold 0.70 --min-cluster-size 30) ;;
    esac
    for test in "${tests[@]}"; do
        # data/ami/test -> ami_test
        name=$(basename "$(dirname "$test")")_$(basename "$test")
        echo "stage 4: diarize and score $test with $model"
        run slimdiar diarize "$test/wav.scp" --model "$model" --out "$exp/diarize/$name" \
            --device "$device" --quiet ${embedding_args[@]+"${embedding_args[@]}"}
        run slimdiar score --ref "$test" --hyp "$exp/diarize/$name" --collar 0 \
            --json "$exp/der/$name.json"
    done
fi
