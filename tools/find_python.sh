#!/usr/bin/env bash
# Sourced by tools/{dist,slurm}_{train,test}.sh: sets PYTHON to the project's interpreter.
#
#   1. $PYTHON, when set (used as given);
#   2. $MMDIGRAP_VENV/bin/python, when MMDIGRAP_VENV is set (tools/install.sh's venv location);
#   3. <repo>/.venv/bin/python, the venv that `bash tools/install.sh` creates by default;
#   4. the active interpreter: `python3`, else `python`, on PATH (e.g. an activated venv or
#      conda env), provided it can import torch.
# Exits with a message that says what to do when none of them works.

mmdigrap_find_python() {
  local root=$1 p
  if [ -n "${PYTHON:-}" ]; then
    return 0
  fi
  if [ -n "${MMDIGRAP_VENV:-}" ]; then
    if [ -x "$MMDIGRAP_VENV/bin/python" ]; then
      PYTHON="$MMDIGRAP_VENV/bin/python"
      return 0
    fi
    echo "$(basename "$0"): MMDIGRAP_VENV=$MMDIGRAP_VENV has no bin/python; create it with" \
      "'MMDIGRAP_VENV=$MMDIGRAP_VENV bash tools/install.sh', or unset MMDIGRAP_VENV" >&2
    return 1
  fi
  if [ -x "$root/.venv/bin/python" ]; then
    PYTHON="$root/.venv/bin/python"
    return 0
  fi
  for p in python3 python; do
    if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import torch' >/dev/null 2>&1; then
      PYTHON=$(command -v "$p")
      return 0
    fi
  done
  echo "$(basename "$0"): no Python environment with torch found: $root/.venv/bin/python" \
    "does not exist and neither python3 nor python on PATH can import torch. Run" \
    "'bash tools/install.sh' (creates $root/.venv), activate an environment that has" \
    "mmdigrap's stack, or set PYTHON=/path/to/python." >&2
  return 1
}
