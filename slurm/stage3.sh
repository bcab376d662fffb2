#!/bin/bash
# Table 6 stage 3: 512 px, 512 tokens, image-text 1,024 + 128 triplets with 7 hard negatives, 16k steps
#
#   sbatch slurm/stage3.sh                                   # from the repository root, 1 node x 8 GPUs
#   MMCLIP_SET="world_size=16" sbatch --nodes=2 slurm/stage3.sh   # 16 GPUs, the same global batches
#   MMCLIP_OUTPUT=runs/s3 MMCLIP_SET="data.streams.image_text.shards=[/data/mm]" sbatch slurm/stage3.sh
#
# Environment and requeue on preemption: slurm/launch.sh and docs/scale.md.
#SBATCH --job-name=mmclip-stage3
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=8
#SBATCH --time=2-00:00:00
#SBATCH --requeue
#SBATCH --signal=USR1@300
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out

export MMCLIP_CONFIG=${MMCLIP_CONFIG:-configs/stage3.yaml}
export MMCLIP_OUTPUT=${MMCLIP_OUTPUT:-runs/stage3}
exec bash "${MMCLIP_REPO:-${SLURM_SUBMIT_DIR:-.}}/slurm/launch.sh"
