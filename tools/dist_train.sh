#!/usr/bin/env bash
# Multi-process training with torchrun, as mmpretrain's tools/dist_train.sh.
#   bash tools/dist_train.sh CONFIG NPROC [train.py args...]
# env: NNODES (1) NODE_RANK (0) PORT (29500) MASTER_ADDR (127.0.0.1)
#      PYTHON (default: $MMDIGRAP_VENV/bin/python, else <repo>/.venv/bin/python from
#              tools/install.sh, else python3/python on PATH; see tools/find_python.sh)
# NPROC is the number of processes per node (GPUs, or CPU processes on a host without CUDA,
# where tools/train.py switches to the gloo backend by itself).
if [ $# -lt 2 ]; then
  echo "usage: bash tools/dist_train.sh CONFIG NPROC [train.py args...]" >&2
  exit 2
fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/tools/find_python.sh"
mmdigrap_find_python "$ROOT" || exit 1

CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}

PYTHONPATH="$ROOT":$PYTHONPATH \
"$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$ROOT/tools/train.py" \
    "$CONFIG" \
    --launcher pytorch "${@:3}"
