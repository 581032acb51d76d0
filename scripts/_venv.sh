# Sourced by scripts/demo and scripts/test: make sure the repo's .venv exists and has mapsync
# installed (editable, with the dev extras). Needs only Python >= 3.11 on the machine.
# Set PYTHON=/path/to/python3.x to choose the interpreter.

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
VPY="$VENV/bin/python"

_py_ok() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; }

_find_python() {
  local c
  for c in ${PYTHON:-} python3.13 python3.12 python3.11 python3 python; do
    if command -v "$c" >/dev/null 2>&1 && _py_ok "$c"; then command -v "$c"; return 0; fi
  done
  echo "error: mapsync needs Python >= 3.11 (none found; set PYTHON=/path/to/python3.11)" >&2
  return 1
}

ensure_venv() {
  if [ -x "$VPY" ] && ! _py_ok "$VPY"; then
    echo "== $VENV is too old or broken: recreating it" >&2
    rm -rf "$VENV"
  fi
  if [ ! -x "$VPY" ]; then
    local py
    py="$(_find_python)" || return 1
    echo "== creating $VENV with $py" >&2
    if ! "$py" -m venv "$VENV"; then
      echo "error: '$py -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)" >&2
      rm -rf "$VENV"
      return 1
    fi
  fi
  # reinstall only when pyproject.toml changed since the last install (the install is editable,
  # so source changes need none)
  local stamp want
  stamp="$VENV/.mapsync-installed"
  want="$("$VPY" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$REPO/pyproject.toml")"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$VPY" -c 'import mapsync, pytest' >/dev/null 2>&1; then
    return 0
  fi
  echo "== installing mapsync and its dev tools into $VENV" >&2
  "$VPY" -m pip install --quiet --disable-pip-version-check -e "$REPO[dev]" >&2
  echo "$want" >"$stamp"
}
