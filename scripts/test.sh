#!/usr/bin/env bash
# The whole test suite, from a fresh clone on a fresh Debian machine, as root:
# installs what it needs, builds the eBPF objects, checks formatting and lints, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
cargo xtask build-ebpf
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --no-fail-fast
