#!/usr/bin/env bash
# The one test command (README and .ci/run): install what the tests need, check the models, lint, type-check, test.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v mosquitto >/dev/null 2>&1; then
    echo "installing mosquitto (tests start their own brokers on loopback ports)"
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq mosquitto >/dev/null
fi
if [ ! -x /usr/bin/chromium ]; then
    echo "installing chromium (the console's browser tests drive it with Playwright; no browser download)"
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
fi
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
python3 -m pip install --quiet --disable-pip-version-check -e ".[test]"
python3 tools/build_models.py --check
python3 tools/config_reference.py --check
ruff check edge tools tests
ruff format --check edge tools tests
mypy
python3 -m pytest -q "$@"
