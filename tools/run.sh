#!/usr/bin/env bash
# The main job: set-up, build, then show what cudl found and benchmark its kernels.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
bash tools/build.sh build
./build/cudl info
./build/cudl bench --device cpu,cuda --sizes small
