#!/usr/bin/env bash
# Install everything the tests need on a fresh Debian machine, then lint, type-check and test.
# Usage: bash scripts/test.sh [pytest args...]
# Without pytest args, the clock-sensitive tests then run again under fixed instants (faketime).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1 \
  || ! command -v openssl >/dev/null 2>&1 || ! command -v faketime >/dev/null 2>&1 \
  || ! command -v amtool >/dev/null 2>&1 || ! command -v prometheus-alertmanager >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager openssl faketime >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/pytest "$@"
if [ "$#" -gt 0 ]; then exit 0; fi

# Nothing may depend on the wall clock, the date or the time zone: run the tests that read a
# clock (simulator, SDK contracts, signing, fleet, refresh, the demo) again at fixed instants.
# faketime starts the clock there and lets it run on. The monotonic clock is shifted with it:
# FAKETIME_DONT_FAKE_MONOTONIC=1 would break Python's time.sleep (clock_nanosleep -> EINVAL).
CLOCK_TESTS=(
  tests/test_simulator_fleet.py tests/test_simulator_protocol.py tests/test_simulator_server.py
  tests/test_simulator_auth.py tests/test_simulator_faults.py
  tests/test_sdk_contract_aliyun.py tests/test_sdk_contract_tencent.py
  tests/test_aliyun_signing.py tests/test_tencent_signing.py
  tests/test_aliyun_findings_simulator.py tests/test_tencent_simulator.py
  tests/test_refresh.py tests/test_chaos.py tests/test_credentials_config.py
  tests/test_cli.py::test_once_demo_prints_both_clouds_and_exits_0
)
at_instant() { # TZ, instant
  echo "=== faketime: the clock-sensitive tests at $(TZ="$1" faketime "$2" date "+%F %T %Z (%z)") ==="
  TZ="$1" faketime "$2" .venv/bin/pytest -q -p no:cacheprovider "${CLOCK_TESTS[@]}"
}
at_instant UTC '2026-12-02 06:00:00 UTC'
at_instant UTC '2028-02-29 15:59:50 UTC'
at_instant UTC '2016-12-31 23:59:59 UTC' # a leap second was inserted right after this one
at_instant Asia/Shanghai '2026-12-31 23:59:30 UTC' # 07:59:30 on New Year's Day in Shanghai
