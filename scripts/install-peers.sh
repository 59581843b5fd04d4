#!/usr/bin/env bash
# Installs the engines the benchmarks compare rtap with (DuckDB, chDB) into a Python virtual
# environment outside the clone, from PyPI, pinned, as prebuilt wheels; later runs find it
# there (and rebuild it when the packages or the system's python changed, or it stopped
# working). Prints the path of the environment's python.
set -euo pipefail
ROOT="${RTAP_PEERS_ROOT:-/var/cache/rtap/peers}"
PACKAGES=(duckdb==2.0.1 chdb==4.4.0)
PY="$ROOT/bin/python"
STAMP="$ROOT/.installed"
WANT="$(python3 -VV 2>&1 | head -1) ${PACKAGES[*]}"
if [[ -x "$PY" && -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]] &&
  "$PY" -c 'import duckdb, chdb' 2>/dev/null; then
  echo "$PY"
  exit 0
fi
echo "install-peers: installing ${PACKAGES[*]} into $ROOT" >&2
python3 -m venv --clear "$ROOT" >&2
"$PY" -m pip install --quiet --disable-pip-version-check --only-binary=:all: "${PACKAGES[@]}" >&2
echo "$WANT" > "$STAMP"
echo "$PY"
