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

# The options and the steps are those of recipes/corpus.sh, which every corpus shares.
exec "$(dirname "$0")/../corpus.sh" ami "$0" "--rttm-dir --uem-dir --annotations-dir" "" "$@"
