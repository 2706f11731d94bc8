#!/usr/bin/env bash
# Runs the README's quick start as written, in a fresh clone of this checkout's HEAD: every line of
# the ```sh blocks between "## Quick start" and the next "## " heading, in order, from the clone's
# root; fails on the first command that fails. The build reuses ccache (tools/build.sh makes its
# hashes independent of the checkout's path). MNIST is fetched again unless this checkout's
# data/mnist holds it, which is then copied.
#   tools/check-quickstart.sh [WORK_DIR]     (default: a new folder under /tmp, removed afterwards)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
work=${1:-$(mktemp -d /tmp/cudl-quickstart.XXXXXX)}
[ $# -ge 1 ] || trap 'rm -rf "$work"' EXIT
git clone -q "$repo" "$work/cudl"
if [ -f data/mnist/train-images-idx3-ubyte ]; then mkdir -p "$work/cudl/data" && cp -r data/mnist "$work/cudl/data/"; fi
script=$(awk '/^## Quick start/{on=1; next} on && /^## /{exit} on && /^```sh/{inblock=1; next}
              inblock && /^```/{inblock=0; next} inblock{print}' README.md)
[ -n "$script" ] || { echo "check-quickstart: no \`\`\`sh block under '## Quick start' in README.md" >&2; exit 1; }
echo "check-quickstart: running in $work/cudl:"
echo "$script" | sed 's/^/  /'
(cd "$work/cudl" && bash -euo pipefail -c "$script")
echo "check-quickstart: ok"
