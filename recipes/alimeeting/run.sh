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

# The options and the steps are those of recipes/corpus.sh, which every corpus shares.
exec "$(dirname "$0")/../corpus.sh" alimeeting "$0" "" "--extract-channel" "$@"
