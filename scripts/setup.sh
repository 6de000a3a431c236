#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian machine: the GL libraries MuJoCo needs for headless
# rendering (EGL via Mesa, OSMesa as a fallback), then .venv with csil-diag and its pinned deps.
set -euo pipefail
cd "$(dirname "$0")/.."

GL_PACKAGES=(libegl1 libgl1 libegl-mesa0 libgl1-mesa-dri libosmesa6)
missing=()
for pkg in "${GL_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "setup: installing ${missing[*]} (headless OpenGL for MuJoCo)"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 || {
    $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q "${missing[@]}" >/dev/null; }
fi

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
stamp=.venv/.csil-diag-installed
EXTRAS=${CSIL_DIAG_EXTRAS:-test}  # scripts/test.sh adds ray (sweep backend tests)
want=$( (cat pyproject.toml; echo "$EXTRAS") | sha256sum | cut -c1-16)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: creating .venv with csil-diag and its pinned dependencies (pip's log: .venv/setup.log)"
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  log=.venv/setup.log
  { .venv/bin/python -m pip install --upgrade pip && .venv/bin/python -m pip install -e ".[$EXTRAS]"; } >"$log" 2>&1 &
  pip_pid=$!
  started=$SECONDS
  # A line every 20 s, so a log file (CI, nohup) never sits silent while pip works.
  while kill -0 "$pip_pid" 2>/dev/null; do
    for _ in $(seq 20); do kill -0 "$pip_pid" 2>/dev/null || break; sleep 1; done
    kill -0 "$pip_pid" 2>/dev/null && echo "setup: pip still installing ($((SECONDS - started)) s; $(wc -l <"$log") log lines)"
  done
  if ! wait "$pip_pid"; then
    tail -n 20 "$log" >&2
    echo "setup: pip failed; the whole log is in $log" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
  echo "setup: .venv ready ($(.venv/bin/python --version), csil-diag $(.venv/bin/python -c 'import csil_diag; print(csil_diag.__version__)'))"
fi
