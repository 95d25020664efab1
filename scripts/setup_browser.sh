#!/usr/bin/env bash
# Idempotent: the system Chromium (Debian package) and the Playwright client library, for the
# browser tests in tests/browser/. Never runs `playwright install` (no browser downloads): the
# tests launch /usr/bin/chromium. Call it after scripts/setup.sh (it needs the venv).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
V="$ROOT/.venv"

if [ ! -x /usr/bin/chromium ]; then
  SUDO=""
  if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y chromium chromium-driver
fi

if ! "$V/bin/python" -c "import playwright.sync_api" 2>/dev/null; then
  "$V/bin/pip" install -q playwright
fi
echo "browser setup ok: $(/usr/bin/chromium --version 2>/dev/null || echo 'chromium ?'), playwright $("$V/bin/python" -c 'import importlib.metadata as m; print(m.version("playwright"))')"
