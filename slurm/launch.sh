#!/bin/bash
# The body of slurm/stage{1,2,3}.sh, run inside the job: one training task per GPU via srun, the
# rendezvous from the allocation, and a requeue when the trainer stopped on a signal (exit 75).
#
# Environment (the stage script sets the first two; anything can be overridden at submission):
#   MMCLIP_CONFIG   stage YAML                     MMCLIP_OUTPUT  run directory (resumed with --resume auto)
#   MMCLIP_SET      space-separated KEY=VALUE overrides, e.g. "steps=2000 data.streams.image_text.shards=[/d/mm_s]"
#   MMCLIP_REPO     the repository (default: the directory sbatch was run from)
#   MMCLIP_PYTHON   the interpreter (default: MMCLIP_REPO/.venv/bin/python, else python3)
#   MASTER_PORT     the rendezvous port (default: 20000 + job id mod 20000)
set -euo pipefail

: "${MMCLIP_CONFIG:?set MMCLIP_CONFIG to a stage YAML}" "${MMCLIP_OUTPUT:?set MMCLIP_OUTPUT to a run directory}"
: "${SLURM_JOB_ID:?run this inside a SLURM job (sbatch slurm/stage1.sh)}"
cd "${MMCLIP_REPO:-${SLURM_SUBMIT_DIR:-$PWD}}"
if [ -z "${MMCLIP_PYTHON:-}" ]; then
    MMCLIP_PYTHON=python3
    [ -x .venv/bin/python ] && MMCLIP_PYTHON=.venv/bin/python
fi

# Rank 0 runs on the allocation's first node; every task reads SLURM_PROCID / SLURM_NTASKS /
# SLURM_LOCALID (mmclip.train.distributed). A requeued job keeps its id, hence its port.
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export MASTER_ADDR
export MASTER_PORT=${MASTER_PORT:-$((20000 + SLURM_JOB_ID % 20000))}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}
# NCCL: fail a hung collective instead of waiting forever; InfiniBand / NVLink are found by NCCL
# itself (set NCCL_SOCKET_IFNAME or NCCL_IB_HCA at submission where a cluster needs them).
export TORCH_NCCL_ASYNC_ERROR_HANDLING=${TORCH_NCCL_ASYNC_ERROR_HANDLING:-1}
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}

if "$MMCLIP_PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    device="CUDA, nccl"
else
    device="no CUDA device: CPU ranks, gloo"
fi
echo "launch: job $SLURM_JOB_ID (restart ${SLURM_RESTART_COUNT:-0}) on $SLURM_JOB_NODELIST," \
     "${SLURM_NTASKS} tasks, rendezvous $MASTER_ADDR:$MASTER_PORT, $device"

overrides=()
for override in ${MMCLIP_SET:-}; do
    overrides+=(--set "$override")
done

# SLURM signals the tasks themselves (--signal=USR1@..., SIGTERM on preemption or requeue); this
# shell only waits for them to checkpoint instead of dying first.
trap 'echo "launch: signal received; the trainer checkpoints at its next step"' TERM USR1
status=0
srun --kill-on-bad-exit=1 --label "$MMCLIP_PYTHON" -m mmclip.cli train "$MMCLIP_CONFIG" \
    --output "$MMCLIP_OUTPUT" --resume auto "${overrides[@]}" || status=$?

if [ "$status" -eq 75 ]; then  # mmclip.train.preemption.EXIT_PREEMPTED: a checkpoint of the last step exists
    echo "launch: the trainer stopped on a signal; requeueing job $SLURM_JOB_ID"
    scontrol requeue "$SLURM_JOB_ID" || true  # already requeued when SLURM itself preempted the job
    exit 0
fi
exit "$status"
