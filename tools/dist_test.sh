#!/usr/bin/env bash
# Multi-process testing with torchrun, as mmpretrain's tools/dist_test.sh.
#   bash tools/dist_test.sh CONFIG CHECKPOINT NPROC [test.py args...]
# env: NNODES (1) NODE_RANK (0) PORT (29500) MASTER_ADDR (127.0.0.1)
#      PYTHON (default: $MMDIGRAP_VENV/bin/python, else <repo>/.venv/bin/python from
#              tools/install.sh, else python3/python on PATH; see tools/find_python.sh)
if [ $# -lt 3 ]; then
  echo "usage: bash tools/dist_test.sh CONFIG CHECKPOINT NPROC [test.py args...]" >&2
  exit 2
fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/tools/find_python.sh"
mmdigrap_find_python "$ROOT" || exit 1

CONFIG=$1
CHECKPOINT=$2
GPUS=$3
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
    "$ROOT/tools/test.py" \
    "$CONFIG" \
    "$CHECKPOINT" \
    --launcher pytorch "${@:4}"
