#!/bin/bash
# LUSIFER stage 2, representation finetuning (LoRA on XLM-R and Mistral-7B sharded with ZeRO-3, GradCache), Table 4
#
#   sbatch slurm/lusifer_finetune.sh                              # from the repository root, 1 node x 8 GPUs
#   MMCLIP_OUTPUT=runs/l2 MMCLIP_SET="model_overrides=[llm_pretrained=/models/mistral]" sbatch slurm/lusifer_finetune.sh
#
# Environment and requeue on preemption: slurm/launch.sh and docs/scale.md; the stage: docs/lusifer.md.
#SBATCH --job-name=mmclip-lusifer-finetune
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=8
#SBATCH --time=2-00:00:00
#SBATCH --requeue
#SBATCH --signal=USR1@300
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out

export MMCLIP_CONFIG=${MMCLIP_CONFIG:-configs/lusifer/finetune.yaml}
export MMCLIP_OUTPUT=${MMCLIP_OUTPUT:-runs/lusifer_finetune}
exec bash "${MMCLIP_REPO:-${SLURM_SUBMIT_DIR:-.}}/slurm/launch.sh"
