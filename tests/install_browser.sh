#!/usr/bin/env bash
# Debian's Chromium and ChromeDriver for the page tests (tests/browser.py), installed only when missing.
# Needs root (CI and these machines run as root); prints what to run otherwise.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "chromium is missing: run 'sudo apt-get update && sudo apt-get install -y chromium chromium-driver'" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends chromium chromium-driver
