#!/usr/bin/env bash
# A fault-lab soak in the background: seed after seed for MINUTES (default 60), each run a
# separate `grenex lab run` (docs/lab.md).  Usage (as root):
#
#   scripts/soak_lab.sh [MINUTES] [OUT_DIR] [REV]
#
# OUT_DIR (default ./lab-soak) gets report.json (rewritten after every seed), soak.log and
# PID; REV (default HEAD) is the git revision every run executes, so edits to the working
# tree during the soak do not change it.  Stop it with: kill "$(cat OUT_DIR/PID)".
set -euo pipefail
minutes="${1:-60}"
out="${2:-lab-soak}"
rev="${3:-HEAD}"
root="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
py="$root/.venv/bin/python"
[ -x "$py" ] || py=python3
nohup "$py" -m grenex lab soak --minutes "$minutes" --report "$out/report.json" \
  --code "$rev" --workdir "$out/runs" >"$out/soak.log" 2>&1 &
echo $! >"$out/PID"
echo "soak running: pid $(cat "$out/PID"), report $out/report.json, log $out/soak.log"
