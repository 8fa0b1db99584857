#!/usr/bin/env bash
# The P-Soups / PCM experiment on GPUs, stage by stage, multi-GPU training through accelerate.
#   DATA=/path/to/psoups_release BASE=allenai/tulu-7b GPUS=8 JUDGE_URL=http://localhost:8000/v1 JUDGE_MODEL=... \
#     bash scripts/reproduce_psoups.sh
# The judge key is read from $OPENAI_API_KEY (never from a file). Re-running resumes every stage.
set -euo pipefail
: "${DATA:?set DATA to the P-Soups data release}" "${BASE:?set BASE to a hub id or local path}"
GPUS=${GPUS:-8}; RUN=${RUN:-runs/psoups}
COMMON=(benchmark=psoups "benchmark.data_dir=$DATA" "model.name_or_path=$BASE" "run_dir=$RUN")
LAUNCH=("launcher.num_processes=$GPUS" "launcher.accelerate_config=${ACCEL:-ddp}")
JUDGE=(eval.judge.kind=llm ${JUDGE_URL:+eval.judge.base_url=$JUDGE_URL} ${JUDGE_MODEL:+eval.judge.model=$JUDGE_MODEL})
rlphf train-sft "${COMMON[@]}"
# without $DATA/rm_training/ the pairs are sampled here and labelled by the judge (pairs.labeler=llm)
rlphf train-rm "${COMMON[@]}" "${JUDGE[@]}" "${LAUNCH[@]}" pole=all
rlphf train-expert "${COMMON[@]}" "${LAUNCH[@]}" pole=all algo="${ALGO:-ppo}"
rlphf train-pcm "${COMMON[@]}" ${PCM_INIT:+pcm.init_from=$PCM_INIT}
for m in pcm soups prompted sft mod uniform; do rlphf generate "${COMMON[@]}" method=$m; done
rlphf eval "${COMMON[@]}" "${JUDGE[@]}" --method pcm --baseline all
rlphf eval "${COMMON[@]}" "${JUDGE[@]}" --method soups --baseline prompted
rlphf report "${COMMON[@]}" "${JUDGE[@]}"
