#!/usr/bin/env bash
# Multi-process training with torchrun, as mmpretrain's tools/dist_train.sh.
#   bash tools/dist_train.sh CONFIG NPROC [train.py args...]
# env: NNODES (1) NODE_RANK (0) PORT (29500) MASTER_ADDR (127.0.0.1) PYTHON (python)
# NPROC is the number of processes per node (GPUs, or CPU processes on a host without CUDA,
# where tools/train.py switches to the gloo backend by itself).

CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
PYTHON=${PYTHON:-python}

PYTHONPATH="$(dirname $0)/..":$PYTHONPATH \
$PYTHON -m torch.distributed.run \
    --nnodes=$NNODES \
    --node_rank=$NODE_RANK \
    --master_addr=$MASTER_ADDR \
    --nproc_per_node=$GPUS \
    --master_port=$PORT \
    $(dirname "$0")/train.py \
    $CONFIG \
    --launcher pytorch ${@:3}
