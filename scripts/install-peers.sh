#!/usr/bin/env bash
# Installs the engines the benchmarks compare rtap with (DuckDB, chDB) and pyarrow into a Python
# virtual environment outside the clone, from PyPI, pinned; later runs find it there. Prints the
# path of the environment's python.
set -euo pipefail
ROOT="${RTAP_PEERS_ROOT:-/var/cache/rtap/peers}"
PACKAGES=(duckdb==2.0.1 chdb==4.4.0 pyarrow==26.0.1)
PY="$ROOT/bin/python"
STAMP="$ROOT/.installed"
if [[ -x "$PY" && -f "$STAMP" && "$(cat "$STAMP")" == "${PACKAGES[*]}" ]]; then
  echo "$PY"
  exit 0
fi
echo "install-peers: installing ${PACKAGES[*]} into $ROOT" >&2
python3 -m venv "$ROOT" >&2
"$PY" -m pip install --quiet --disable-pip-version-check "${PACKAGES[@]}" >&2
echo "${PACKAGES[*]}" > "$STAMP"
echo "$PY"
