#!/bin/bash
# Table 6 stage 1: 224 px, 77 tokens, global batches 16,384 + 16,384, 100k steps (~10 days on 8 H100: requeues itself every time limit)
#
#   sbatch slurm/stage1.sh                                   # from the repository root, 1 node x 8 GPUs
#   MMCLIP_SET="world_size=16" sbatch --nodes=2 slurm/stage1.sh   # 16 GPUs, the same global batches
#   MMCLIP_OUTPUT=runs/s1 MMCLIP_SET="data.streams.image_text.shards=[/data/mm]" sbatch slurm/stage1.sh
#
# Environment and requeue on preemption: slurm/launch.sh and docs/scale.md.
#SBATCH --job-name=mmclip-stage1
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=8
#SBATCH --time=4-00:00:00
#SBATCH --requeue
#SBATCH --signal=USR1@300
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out

export MMCLIP_CONFIG=${MMCLIP_CONFIG:-configs/stage1.yaml}
export MMCLIP_OUTPUT=${MMCLIP_OUTPUT:-runs/stage1}
exec bash "${MMCLIP_REPO:-${SLURM_SUBMIT_DIR:-.}}/slurm/launch.sh"
