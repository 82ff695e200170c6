#!/usr/bin/env bash
# The lab demo on a fresh Debian machine, as root: installs what the build and the lab need
# (scripts/setup.sh), builds the project's task runner and the eBPF objects, then runs
# `cargo xtask lab`, which builds the daemons (with progress), builds the network in
# namespaces, drives traffic through the steps, and tears everything down.
#
#   bash scripts/lab.sh                          # the live terminal view (q quits)
#   bash scripts/lab.sh --non-interactive        # narrated lines and a summary
#   bash scripts/lab.sh --non-interactive --json --duration 30 --svg /tmp/buckets.svg
#
# Arguments go to `cargo xtask lab` (see `cargo xtask lab --help`). Exit code 0 when every
# step of the demonstration held and the teardown left nothing behind.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/lab.sh: must run as root (namespaces, XDP and tc programs)" >&2
    exit 2
fi
bash scripts/setup.sh
# cargo's own progress while the task runner compiles (the `cargo xtask` alias is quiet).
cargo build -p xtask
cargo xtask build-ebpf
exec cargo xtask lab "$@"
