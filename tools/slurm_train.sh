#!/usr/bin/env bash
# Training under Slurm (srun), as mmpretrain's tools/slurm_train.sh.
#   bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args...]
# env: GPUS (8) GPUS_PER_NODE (8) CPUS_PER_TASK (5) SRUN_ARGS ("")
#      GRES (gpu:$GPUS_PER_NODE; set GRES= to request no GPUs, e.g. on a CPU partition,
#            where tools/train.py switches to the gloo backend by itself)
#      PYTHON (default: $MMDIGRAP_VENV/bin/python, else <repo>/.venv/bin/python from
#              tools/install.sh, else python3/python on PATH; see tools/find_python.sh.
#              The nodes must see the same path, e.g. the repository on a shared file system)
if [ $# -lt 4 ]; then
  echo "usage: bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args...]" >&2
  exit 2
fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/tools/find_python.sh"
mmdigrap_find_python "$ROOT" || exit 1

set -x

PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=$4
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
GRES=${GRES-gpu:${GPUS_PER_NODE}}

PYTHONPATH="$ROOT":$PYTHONPATH \
srun -p "${PARTITION}" \
    --job-name="${JOB_NAME}" \
    ${GRES:+--gres=${GRES}} \
    --ntasks="${GPUS}" \
    --ntasks-per-node="${GPUS_PER_NODE}" \
    --cpus-per-task="${CPUS_PER_TASK}" \
    --kill-on-bad-exit=1 \
    ${SRUN_ARGS} \
    "$PYTHON" -u "$ROOT/tools/train.py" "${CONFIG}" --work-dir="${WORK_DIR}" --launcher="slurm" \
    "${@:5}"
