#!/usr/bin/env bash
# SPPO (Sequence-Level PPO, arXiv 2604.08865) on stock verl 0.9.1: the paper's "small critic" run, a
# DeepSeek-R1-Distill-Qwen-7B policy scored by a DeepSeek-R1-Distill-Qwen-1.5B critic that reads only the
# prompt, one response per prompt (N = 1), PPO clip 0.2, token-mean, no KL. The recipe itself is
# sppo_rl/integrations/verl/config/seq_ppo_trainer.yaml; this script adds the data and the cluster.
#
# Needs GPUs, a rollout engine and the weights (none of which the project's CI machines have):
#   pip install "sppo-rl[verl]" "verl[vllm]==0.9.1"        # or verl[sglang] and ROLLOUT=sglang
# Data: verl's parquet format (a chat `prompt`, `reward_model.ground_truth`, and a `data_source` whose scorer
# returns 0/1, e.g. DigitalLearningGmbH/MATH-lighteval as written by verl's examples/data_preprocess/math_dataset.py;
# verl's DAPO scorer returns -1/+1 and is refused).
#
# Extra Hydra overrides go through: `bash run_seq_ppo_7b.sh trainer.total_epochs=1`; with `--cfg job` it only
# prints the composed config (no GPU needed).
set -euo pipefail

PYTHON=${PYTHON:-python3}
TRAIN_FILES=${TRAIN_FILES:-$HOME/data/math/train.parquet}
VAL_FILES=${VAL_FILES:-$HOME/data/math/test.parquet}
ROLLOUT=${ROLLOUT:-vllm}
NNODES=${NNODES:-1}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}

CONFIG_DIR=$("$PYTHON" -c 'import sppo_rl.integrations.verl as m; print(m.CONFIG_DIR)')

exec "$PYTHON" -m verl.trainer.main_ppo \
    --config-path "$CONFIG_DIR" --config-name seq_ppo_trainer \
    data.train_files="$TRAIN_FILES" \
    data.val_files="$VAL_FILES" \
    actor_rollout_ref.rollout.name="$ROLLOUT" \
    actor_rollout_ref.rollout.tensor_model_parallel_size=2 \
    actor_rollout_ref.rollout.gpu_memory_utilization=0.6 \
    trainer.nnodes="$NNODES" \
    trainer.n_gpus_per_node="$GPUS_PER_NODE" \
    trainer.project_name=sppo \
    trainer.experiment_name=seq_ppo_7b_critic_1p5b \
    trainer.logger='[console]' \
    trainer.save_freq=50 \
    trainer.test_freq=25 \
    "$@"
