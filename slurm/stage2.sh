#!/bin/bash
# Table 6 stage 2: 384 px, 512 tokens, global batches 8,192 + 8,192, 6k steps
#
#   sbatch slurm/stage2.sh                                   # from the repository root, 1 node x 8 GPUs
#   MMCLIP_SET="world_size=16" sbatch --nodes=2 slurm/stage2.sh   # 16 GPUs, the same global batches
#   MMCLIP_OUTPUT=runs/s2 MMCLIP_SET="data.streams.image_text.shards=[/data/mm]" sbatch slurm/stage2.sh
#
# Environment and requeue on preemption: slurm/launch.sh and docs/scale.md.
#SBATCH --job-name=mmclip-stage2
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=8
#SBATCH --time=2-00:00:00
#SBATCH --requeue
#SBATCH --signal=USR1@300
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out

export MMCLIP_CONFIG=${MMCLIP_CONFIG:-configs/stage2.yaml}
export MMCLIP_OUTPUT=${MMCLIP_OUTPUT:-runs/stage2}
exec bash "${MMCLIP_REPO:-${SLURM_SUBMIT_DIR:-.}}/slurm/launch.sh"
