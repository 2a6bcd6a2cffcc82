#!/usr/bin/env bash
# Install Debian's chromium and chromium-driver for the rendered book's check
# (python -m zoomin_lib.book.page_check) if they are missing. Needs root and apt-get (as in CI);
# otherwise says what to install and fails.
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "setup_browser: /usr/bin/chromium and /usr/bin/chromedriver are needed for the page check;" >&2
  echo "  install them as root: apt-get install -y chromium chromium-driver" >&2
  exit 1
fi
echo "setup_browser: installing Debian's chromium and chromium-driver"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -qq chromium chromium-driver >/tmp/setup_browser.log 2>&1; then
  apt-get update -qq >>/tmp/setup_browser.log 2>&1 || true
  apt-get install -y -qq chromium chromium-driver >>/tmp/setup_browser.log 2>&1 || {
    tail -20 /tmp/setup_browser.log >&2
    echo "setup_browser: apt-get could not install chromium chromium-driver (log above)" >&2
    exit 1
  }
fi
/usr/bin/chromium --version
