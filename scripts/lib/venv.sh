# Sourced by scripts/demo and scripts/test. Makes sure $ROOT/.venv exists with Python >= 3.11 and both
# distributions installed (the client, clients/python, and the server at the root; editable in compat mode, which
# puts both directories on sys.path so that the namespace package consent_ledger spans them for every tool, with
# the dev extras); reinstalls only when either pyproject.toml changed or the install is missing. Sets ROOT and
# VENV; leaves the caller's working directory alone.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$ROOT/.venv"

is_new_enough() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' >/dev/null 2>&1; }

if [ ! -x "$VENV/bin/python" ]; then
  PY=""
  for candidate in "${PYTHON:-}" python3 python3.13 python3.12 python3.11; do
    if [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 && is_new_enough "$candidate"; then
      PY="$candidate"
      break
    fi
  done
  if [ -z "$PY" ]; then
    found="$(python3 --version 2>&1 || echo 'no python3 on PATH')"
    echo "consent-ledger needs Python 3.11 or newer (found: $found)." >&2
    echo "Install Python 3.11+ and run this again (or set PYTHON=/path/to/python3.11)." >&2
    exit 1
  fi
  echo "==> creating .venv with $("$PY" --version 2>&1)" >&2
  "$PY" -m venv "$VENV"
elif ! is_new_enough "$VENV/bin/python"; then
  echo "$VENV uses $("$VENV/bin/python" --version 2>&1); consent-ledger needs 3.11 or newer: remove .venv and run again." >&2
  exit 1
fi

STAMP="$VENV/.consent-ledger-install"
want="$("$VENV/bin/python" -c 'import hashlib, sys; print(*(hashlib.sha256(open(p, "rb").read()).hexdigest() for p in sys.argv[1:3]), sys.argv[3])' "$ROOT/pyproject.toml" "$ROOT/clients/python/pyproject.toml" "$ROOT")"
# Installed, and from this very tree (checked from / so that a working directory's sources don't count).
installed_here() {
  (cd / && "$VENV/bin/python" -c 'import sys, consent_ledger.cli, consent_ledger.core, consent_ledger_client; sys.exit(0 if all(m.__file__.startswith(sys.argv[1] + "/") for m in (consent_ledger.cli, consent_ledger.core, consent_ledger_client)) else 1)' "$ROOT") >/dev/null 2>&1
}
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$want" ] || ! installed_here; then
  echo "==> installing consent-ledger with its dev extras into .venv (pip, quiet; a minute or two the first time)" >&2
  (cd "$ROOT" && "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --config-settings editable_mode=compat -e ./clients/python -e '.[dev]')
  echo "$want" > "$STAMP"
fi
