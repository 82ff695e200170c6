#!/usr/bin/env bash
# Builds, once per machine, a Squid from Debian's own source package with our correction of
# its two WCCPv2 faults (tests/squid/wccp2-64bit.patch; tests/squid/README.md says why), so
# the interoperability tests can run a Squid that completes a WCCP join with our router.
#
# Usage, as root, on Debian bookworm:
#   bash scripts/build-squid.sh                # build if needed; the binary's path is the last line
#   bash scripts/build-squid.sh --print-path   # only the path on stdout (builds first if needed)
#   bash scripts/build-squid.sh --rebuild      # discard this version's install and build again
#
# Steps: enable deb-src for the existing Debian sources (idempotent), install the few
# packages a minimal build needs (only the missing ones), `apt-get source squid`, apply the
# patch with `patch -p1`, autoreconf (Debian's own patches change Makefile.am files), a
# minimal configure, `make -j2`, `make install` into
#   /var/cache/wccp-redirector/squid-<debian version>-<patch sha256, 12 hex>/
# so a changed patch or a new Debian version builds into a new prefix and an unchanged one
# is a no-op (under a second). A build took 4.5 minutes on 2 cores (make -j2: 3.8 minutes).
# Progress goes to stderr, the path to stdout. Per-step logs are kept in
# <prefix>/build-logs/; the work tree is removed after a successful install (kept on
# failure, for inspection). Tests should run this Squid with `-n <name>` (its own shared
# memory segment names) and `shutdown_lifetime 1 seconds`.
#
# Changing CONFIGURE_FLAGS below does not change the prefix: run with --rebuild afterwards.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PATCH="$REPO/tests/squid/wccp2-64bit.patch"
CACHE=/var/cache/wccp-redirector
JOBS=2                       # the machines have 2 cores, shared with other builds

# What a minimal configure + autoreconf + build needs, measured on bookworm. Debian's full
# `apt-get build-dep squid` would install 37 packages and upgrade 28 (systemd, PAM, Kerberos,
# LDAP, SASL, eCAP, ...) for features this build leaves out.
BUILD_PACKAGES=(
    dpkg-dev xz-utils patch                  # apt-get source (dpkg-source), the patch
    g++ make pkg-config                      # the compiler and build tools
    autoconf automake libtool libltdl-dev    # autoreconf: Debian's patches touch Makefile.am
    libcap-dev                               # keeps CAP_NET_ADMIN after dropping root (TPROXY)
)

# A minimal intercepting HTTP proxy with WCCPv2 and nothing else.
CONFIGURE_FLAGS=(
    --enable-linux-netfilter --with-libcap   # intercept (NAT REDIRECT) and TPROXY
    --enable-wccpv2 --disable-wccp           # WCCPv2 only
    --without-openssl --without-gnutls --without-nettle
    --disable-ecap --disable-icap-client --disable-esi
    --disable-auth
    --disable-auth-basic --disable-auth-digest --disable-auth-negotiate --disable-auth-ntlm
    --disable-external-acl-helpers --disable-url-rewrite-helpers
    --disable-storeid-rewrite-helpers --disable-log-daemon-helpers
    --disable-security-cert-validators --disable-security-cert-generators
    --without-mit-krb5 --without-heimdal-krb5 --without-gnugss
    --without-systemd --without-netfilter-conntrack --without-tdb --without-cppunit
    --without-expat --without-libxml2
    --disable-snmp --disable-htcp --disable-ident-lookups --disable-eui
    --disable-loadable-modules
    --enable-storeio=ufs --enable-disk-io=Blocking --enable-removal-policies=lru
    --disable-arch-native --disable-strict-error-checking --disable-dependency-tracking
)

START=$SECONDS
QUIET=0
REBUILD=0

log() { [ "$QUIET" -eq 1 ] || printf 'build-squid [%4ds]: %s\n' $((SECONDS - START)) "$*" >&2; }
say() { printf 'build-squid [%4ds]: %s\n' $((SECONDS - START)) "$*" >&2; }   # even with --print-path
die() { printf 'build-squid: ERROR: %s\n' "$*" >&2; exit 1; }

usage() { sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"; }

while [ $# -gt 0 ]; do
    case $1 in
    --print-path) QUIET=1 ;;
    --rebuild) REBUILD=1 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
    esac
    shift
done

[ "$(id -u)" -eq 0 ] || die "must run as root (it installs packages and edits apt sources)"
[ -r "$PATCH" ] || die "patch not found: $PATCH"
command -v apt-get >/dev/null && command -v dpkg-query >/dev/null || die "needs Debian's apt-get and dpkg"

mkdir -p "$CACHE"
# One build at a time per machine; a second caller waits for the first and then finds it done.
exec 9>"$CACHE/build-squid.lock"
if ! flock -n 9; then
    say "another build-squid holds $CACHE/build-squid.lock; waiting"
    flock 9
fi

# Runs a step with its output in a log file; on failure shows the log's tail.
LOGDIR=
run_step() { # name command...
    local name=$1 t0=$SECONDS rc=0
    shift
    say "$name ..."
    "$@" >"$LOGDIR/$name.log" 2>&1 || rc=$?
    if [ $rc -ne 0 ]; then
        printf 'build-squid: step "%s" failed (exit %d); last lines of %s:\n' "$name" $rc "$LOGDIR/$name.log" >&2
        tail -n 40 "$LOGDIR/$name.log" | sed 's/^/    /' >&2
        die "step \"$name\" failed; the work tree is kept in $WORK"
    fi
    say "$name done in $((SECONDS - t0)) s"
}

# --- 1. deb-src entries --------------------------------------------------------------------
# Debian's deb822 sources: add deb-src to every stanza's Types that has deb but not deb-src.
# A one-line-style /etc/apt/sources.list (older installs) gets a separate deb-src file.
SOURCES_CHANGED=0
enable_deb_src() {
    local f=/etc/apt/sources.list.d/debian.sources legacy=/etc/apt/sources.list
    local extra=/etc/apt/sources.list.d/wccp-redirector-deb-src.list
    if [ -f "$f" ]; then
        if grep -Eq '^Types:.*[[:space:]]deb([[:space:]]|$)' "$f" &&
            grep -E '^Types:' "$f" | grep -Evq '[[:space:]]deb-src([[:space:]]|$)'; then
            sed -E -i '/^Types:/{/[[:space:]]deb-src([[:space:]]|$)/!s/^(Types:.*[[:space:]]deb)([[:space:]]|$)/\1 deb-src\2/}' "$f"
            say "added deb-src to the Types of $f"
            SOURCES_CHANGED=1
        fi
    elif [ -f "$legacy" ] && grep -Eq '^deb[[:space:]]' "$legacy" && ! grep -Eq '^deb-src[[:space:]]' "$legacy" && [ ! -f "$extra" ]; then
        sed -n -E 's/^deb([[:space:]])/deb-src\1/p' "$legacy" >"$extra"
        say "wrote $extra from $legacy"
        SOURCES_CHANGED=1
    fi
}
enable_deb_src

# The Debian version apt-get source would fetch (needs the deb-src index).
source_version() {
    apt-get source --print-uris -qq squid 2>/dev/null |
        sed -n -E "s/^'[^']*' squid_([^ ]+)\.dsc .*/\1/p" | head -n 1
}
VERSION=
[ "$SOURCES_CHANGED" -eq 0 ] && VERSION=$(source_version || true)
if [ -z "$VERSION" ]; then
    log "apt-get update (deb-src index) ..."
    apt-get update -qq >/dev/null 2>&1 || apt-get update -qq >&2 || die "apt-get update failed"
    VERSION=$(source_version || true)
    [ -n "$VERSION" ] || die "apt cannot find the squid source package: is there a deb-src entry for Debian main?"
fi

PATCH_SHA=$(sha256sum "$PATCH" | cut -c1-12)
PREFIX="$CACHE/squid-$VERSION-$PATCH_SHA"
SQUID="$PREFIX/sbin/squid"
STAMP="$PREFIX/.build-complete"

if [ "$REBUILD" -eq 1 ] && [ -e "$PREFIX" ]; then
    say "--rebuild: removing $PREFIX"
    rm -rf "$PREFIX"
fi

if [ -f "$STAMP" ] && [ -x "$SQUID" ]; then
    log "up to date: Squid $VERSION with patch $PATCH_SHA already built"
    [ "$QUIET" -eq 1 ] || say "installed binary: $SQUID"
    echo "$SQUID"
    exit 0
fi

say "building Squid $VERSION with $(basename "$PATCH") ($PATCH_SHA) into $PREFIX (about 5 minutes)"
rm -rf "$PREFIX"   # a partial install from an interrupted run
WORK="$CACHE/build/squid-$VERSION-$PATCH_SHA"
rm -rf "$WORK"
mkdir -p "$WORK" "$WORK/logs"
LOGDIR="$WORK/logs"

# --- 2. build packages (only the missing ones, so nothing already installed is upgraded) --
missing=()
for p in "${BUILD_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing: ${missing[*]}"
    run_step apt-install env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    say "build packages already installed"
fi

# --- 3. source, patch, autoreconf, configure, make, install ------------------------------
# apt-get source runs dpkg-source, which applies Debian's own patches (debian/patches).
# _apt cannot write into a root-only directory; the download falls back to root (a warning).
in_dir() { # dir command...: runs the command in dir (a subshell, so the script's cwd stays)
    local dir=$1
    shift
    (cd "$dir" && "$@")
}
run_step apt-get-source in_dir "$WORK" apt-get source -q "squid=$VERSION"
SRC=$(find "$WORK" -mindepth 1 -maxdepth 1 -type d -name 'squid-*' | head -n 1)
[ -n "$SRC" ] && [ -f "$SRC/src/wccp2.cc" ] || die "apt-get source left no squid-*/src/wccp2.cc in $WORK"

run_step patch in_dir "$SRC" patch -p1 --forward --batch -i "$PATCH"
# Debian's build runs autoreconf too (dh_autoreconf): its patches add sources to
# src/Makefile.am and friends without regenerating Makefile.in.
run_step autoreconf in_dir "$SRC" autoreconf -f -i
run_step configure in_dir "$SRC" ./configure --prefix="$PREFIX" \
    --enable-build-info="wccp-redirector: Debian $VERSION + $(basename "$PATCH") $PATCH_SHA" \
    "${CONFIGURE_FLAGS[@]}" CFLAGS=-O2 CXXFLAGS=-O2
run_step make in_dir "$SRC" make -j"$JOBS"
run_step install in_dir "$SRC" make install

[ -x "$SQUID" ] || die "make install did not produce $SQUID"
run_step squid-v "$SQUID" -v
mkdir -p "$PREFIX/build-logs"
cp "$LOGDIR"/*.log "$SRC/config.log" "$PREFIX/build-logs/" 2>/dev/null || true
cp "$PATCH" "$PREFIX/build-logs/"
printf '%s\n' "${CONFIGURE_FLAGS[@]}" >"$PREFIX/build-logs/configure-flags"
printf 'version=%s\npatch_sha256=%s\nbuilt=%s\nseconds=%s\n' "$VERSION" \
    "$(sha256sum "$PATCH" | cut -d' ' -f1)" "$(date -u +%FT%TZ)" $((SECONDS - START)) >"$STAMP"
rm -rf "$WORK"
rmdir "$CACHE/build" 2>/dev/null || true

say "built in $((SECONDS - START)) s; installed binary: $SQUID"
echo "$SQUID"
