#!/usr/bin/env bash
# Idempotent: the system Chromium (Debian package) and the Playwright client library, for the
# browser tests in tests/browser/. Never runs `playwright install` (no browser downloads): the
# tests launch /usr/bin/chromium. `make test` calls it after scripts/setup.sh (it needs the venv);
# it fails, saying what is missing, when it cannot install something.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
V="$ROOT/.venv"

if [ ! -x /usr/bin/chromium ]; then
  SUDO=""
  if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
  if ! { $SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y chromium chromium-driver; }; then
    echo "setup_browser: cannot install /usr/bin/chromium (needs root or sudo, and Debian's package mirror)." >&2
    echo "Install Debian's chromium package by hand, then run make test again; the browser tests need it." >&2
    exit 1
  fi
fi

if ! "$V/bin/python" -c "import playwright.sync_api" 2>/dev/null; then
  "$V/bin/pip" install -q playwright || { echo "setup_browser: pip could not install playwright" >&2; exit 1; }
fi
echo "browser setup ok: $(/usr/bin/chromium --version 2>/dev/null || echo 'chromium ?'), playwright $("$V/bin/python" -c 'import importlib.metadata as m; print(m.version("playwright"))')"
