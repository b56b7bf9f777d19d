# shellcheck shell=bash
# Shared by scripts/preview and scripts/test: make the project runnable on a fresh Debian 12
# machine that has only Python 3.11 and apt. Idempotent and quiet when everything is there; the
# first setup shows its progress and says how big it is.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export UV_PYTHON_DOWNLOADS=never   # use the machine's Python 3.11, never fetch one
export UV_PROJECT_ENVIRONMENT="$ROOT/.venv"

log() { printf '==> %s\n' "$*" >&2; }

ensure_uv() {
  if command -v uv >/dev/null 2>&1; then UV=uv; return; fi
  local tools="${XDG_CACHE_HOME:-$HOME/.cache}/ecoma-infra/uv-tool"
  if [ ! -x "$tools/bin/uv" ]; then
    log "installing uv into $tools"
    python3 -m venv "$tools" || {
      log "python3 -m venv failed: install python3-venv (apt-get install python3-venv)"; exit 1; }
    "$tools/bin/pip" install --quiet --disable-pip-version-check 'uv>=0.4,<1'
  fi
  UV="$tools/bin/uv"
}

# What the environment was last synced from: uv.lock and pyproject.toml (the project's own entry
# points live there), recorded inside .venv, so that a removed .venv forgets it too.
SYNCED_FROM="$ROOT/.venv/.ecoma-synced-from"

lock_digest() {
  { cat "$ROOT/uv.lock" "$ROOT/pyproject.toml" 2>/dev/null || true; } | sha256sum | cut -d' ' -f1
}

record_sync() {
  if [ -d "$ROOT/.venv" ]; then printf '%s\n' "$1" >"$SYNCED_FROM"; fi
}

# `uv sync` only when the lock changed since the last sync: with compile-bytecode even a sync
# that changes nothing costs ~2 s, on every call of the scripts.
ensure_python_env() {
  local digest
  digest="$(lock_digest)"
  if [ ! -d "$ROOT/.venv" ]; then
    ensure_uv
    # The first time, uv shows its progress: it is minutes of downloads on a slow line.
    log "first setup: installing the locked Python environment into .venv: about 220 MB of" \
      "wheels to download (the Pulumi provider SDKs, Ansible, the linters), 1.4 GB once" \
      "installed; later runs only check it"
    (cd "$ROOT" && "$UV" sync --frozen)
    record_sync "$digest"
  elif [ "$(cat "$SYNCED_FROM" 2>/dev/null)" != "$digest" ]; then
    ensure_uv
    log "syncing .venv from uv.lock"
    (cd "$ROOT" && "$UV" sync --frozen --quiet)
    record_sync "$digest"
  fi
  export PATH="$ROOT/.venv/bin:$PATH"
}

# apt packages, installed only when missing; needs root (the lab needs root anyway).
ensure_apt_packages() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    log "missing apt packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})"
    return 1
  fi
  log "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
