#!/usr/bin/env bash
# Idempotent set-up on a fresh machine: Fashion-MNIST, a virtual environment, and the Python packages.
# Re-running it is cheap: packages are reinstalled only when pyproject.toml or this script change.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
# torch for this machine: these wheels lie on its disk. Elsewhere set TORCH_SPEC (e.g. TORCH_SPEC=torch
# for the newest build for your GPU); pyproject.toml only asks for torch>=2.2.
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}

# Fashion-MNIST, offline, from Debian's package (elsewhere torchvision downloads it on first use).
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  { apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; }; } ||
    echo "setup: warning: could not install Debian's dataset-fashion-mnist; tests that need it will skip" >&2
fi

# Headless Chromium and its driver, from Debian, for the browser test (tests/test_browser.py skips without them).
if { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; } && command -v apt-get >/dev/null &&
  [ "$(id -u)" = 0 ]; then
  { apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null; }; } ||
    echo "setup: warning: could not install Debian's chromium and chromium-driver; the browser test will skip" >&2
fi

# FID's Inception weights: pytorch-fid downloads them on first use; a machine without internet gets the
# copy in ../shared/fid (when present) placed in torch hub's standard cache.
fid_weights=../shared/fid/pt_inception-2015-12-05-6726825d.pth
fid_cache=${TORCH_HOME:-$HOME/.cache/torch}/hub/checkpoints
if [ -f "$fid_weights" ] && [ ! -f "$fid_cache/$(basename "$fid_weights")" ]; then
  mkdir -p "$fid_cache" && cp "$fid_weights" "$fid_cache/"
fi

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
stamp="$VENV/.setup-stamp"
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python packages into $VENV (first time: a few minutes)" >&2
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install -q $TORCH_SPEC
  "$VENV/bin/pip" install -q -e '.[test,bench]'
  echo "$want" > "$stamp"
fi
