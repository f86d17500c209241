# Sourced by scripts/test and scripts/sandbox: make sure $VENV holds Salt
# ($SALT_VERSION, default 3008.4) and this project with the given extras.
SALT_VERSION="${SALT_VERSION:-3008.4}"
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

ensure_venv() {
  local extras="$1"
  if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
  fi
  local stamp="$VENV/.salt_ws-installed-$extras"
  local want="salt==$SALT_VERSION $(sha1sum setup.cfg | cut -c1-12)"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet "salt==$SALT_VERSION" -e ".[$extras]"
    echo "$want" > "$stamp"
  fi
}
