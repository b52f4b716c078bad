#!/usr/bin/env bash
# The one test command (README and .ci/run): install what the tests need, check the models, lint, type-check, test.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v mosquitto >/dev/null 2>&1; then
    echo "installing mosquitto (tests start their own brokers on loopback ports)"
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq mosquitto >/dev/null
fi
# Central-store tests run on SQLite and on a real PostgreSQL server at 127.0.0.1:5432 (trust auth,
# user postgres); each test creates and drops its own database.
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
        echo "installing postgresql"
        $SUDO apt-get update -qq && $SUDO apt-get install -y -qq postgresql >/dev/null
        # A fresh cluster asks loopback clients for a password; the tests connect as postgres with trust,
        # as on these machines (a throwaway test server on loopback only).
        for hba in /etc/postgresql/*/main/pg_hba.conf; do
            $SUDO sed -i -E 's/^(local|host)(\s+all\s+all\s+.*)(scram-sha-256|md5|peer)\s*$/\1\2trust/; s/^(local\s+all\s+postgres\s+)peer/\1trust/' "$hba"
        done
    fi
    echo "starting postgresql"
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start || true
    for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
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
python3 -m mypy  # the interpreter that has the project's dependencies (a global mypy does not see them)
python3 -m pytest -q "$@"
