#!/usr/bin/env bash
# The whole test suite, from a fresh clone on a fresh Debian machine, as root:
# installs what it needs, builds the patched Squid and the eBPF objects, checks formatting
# and lints, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
# The patched Squid the WCCP join tests run against (tests/squid/README.md): built once per
# machine (about 5 minutes), a no-op after that. The tests find it through SQUID_PATCHED.
SQUID_PATCHED=$(bash scripts/build-squid.sh --print-path)
export SQUID_PATCHED
cargo xtask build-ebpf
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --no-fail-fast
