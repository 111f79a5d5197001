#!/usr/bin/env bash
# Installs the NEWEST versions pyproject.toml allows (ignoring constraints.txt) in a throw-away venv and
# runs the fast tier there, so that a new release of a dependency is met on purpose, not by a newcomer.
#   scripts/newest.sh            report: the fast tier's result and the versions that differ from the pins
#   scripts/newest.sh --write    the same, then (only if the fast tier passed) rewrite constraints.txt
#   scripts/newest.sh --all      run the whole suite (slow tier, ruff, mypy), not only the fast tier
# Python: $PYTHON (default python3). The venv is left in $VENV (default a new temporary directory).
set -euo pipefail
cd "$(dirname "$0")/.."
write=0 marker=(-m "not slow")
for arg in "$@"; do
    case "$arg" in
        --write) write=1 ;;
        --all) marker=() ;;
        *) echo "usage: scripts/newest.sh [--write] [--all]" >&2; exit 2 ;;
    esac
done
venv="${VENV:-$(mktemp -d -t llmserve-newest-XXXXXX)}"
"${PYTHON:-python3}" -m venv "$venv"
py="$venv/bin/python"
# the test mode of scripts/install.sh, without the pins
extras="$(sed -n 's/^test_extras="\([^"]*\)".*/\1/p' scripts/install.sh)"
packages="$(sed -n 's/^test_extras=.* test_packages="\([^"]*\)".*/\1/p' scripts/install.sh)"
"$py" -m pip install -q torch==2.13.0 -e ".[$extras]"
# shellcheck disable=SC2086  # a list of words
"$py" -m pip install -q --no-deps $packages
"$py" -m pip freeze --exclude-editable | grep -v '^torch==' | sort -f > "$venv/newest.txt"
grep -v '^#' constraints.txt | sort -f > "$venv/pinned.txt"
echo "== versions that differ from constraints.txt (< pinned, > newest):"
diff "$venv/pinned.txt" "$venv/newest.txt" || true
status=0
(export HF_HUB_OFFLINE=1; "$py" -m pytest -q "${marker[@]}") || status=$?
if [ "$status" -eq 0 ] && [ "$write" -eq 1 ]; then
    { grep '^#' constraints.txt; cat "$venv/newest.txt"; } > constraints.txt.new
    mv constraints.txt.new constraints.txt
    echo "== constraints.txt moved forward; run the whole suite (bash .ci/run) before committing it"
fi
echo "== the venv stays in $venv"
exit "$status"
