#!/usr/bin/env bash
# Installs everything the project's build, tests and lab need on a Debian machine, as root.
# Idempotent: a second run installs nothing and takes about a second.
set -euo pipefail

# Debian packages: the eBPF toolchain, the peers we prove interoperability against (Squid,
# Wireshark's dissector), and the network tools the namespace harness drives.
APT_PACKAGES=(
    clang llvm libbpf-dev bpftool       # cargo xtask build-ebpf
    iproute2 nftables iptables          # namespaces, veth, bridges, policy routing
    tshark tcpdump                      # independent decoder and captures
    squid                               # a real WCCP engine
    ca-certificates curl socat
)

if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/setup.sh: must run as root (it installs Debian packages)" >&2
    exit 2
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian starts no services here (PID 1 is not systemd), but a machine that does would run
# a system Squid on port 3128; the tests start their own Squids in namespaces.

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found: install a Rust toolchain (rustup) with clippy and rustfmt" >&2
    exit 2
fi
for component in clippy rustfmt; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        rustup component add "$component"
    fi
done
echo "setup: ok"
