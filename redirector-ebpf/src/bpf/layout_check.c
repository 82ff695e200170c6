// SPDX-License-Identifier: MIT OR GPL-2.0-only
/*
 * Never loaded into the kernel. It only instantiates each type that C shares
 * with Rust, so that every one of them appears in this object's BTF; the test
 * redirector-ebpf/tests/layout.rs reads that BTF and compares it with the
 * #[repr(C)] twins.
 *
 * To add a type: one LAYOUT_CHECK line here and one entry in
 * redirector-ebpf/src/layout.rs (SHARED_TYPES).
 */
#include "redirector.h"

#define LAYOUT_CHECK(name) struct name layout_check__##name __attribute__((used))

LAYOUT_CHECK(redirector_counters);
LAYOUT_CHECK(redirector_control);
LAYOUT_CHECK(redirector_port);
LAYOUT_CHECK(redirector_table);
LAYOUT_CHECK(redirector_service);
LAYOUT_CHECK(redirector_bucket);
LAYOUT_CHECK(redirector_engine);
LAYOUT_CHECK(redirector_engine_key);
LAYOUT_CHECK(redirector_flow);
LAYOUT_CHECK(redirector_conn);
LAYOUT_CHECK(redirector_mac_key);
LAYOUT_CHECK(redirector_prefix_key);
LAYOUT_CHECK(redirector_slot);
LAYOUT_CHECK(redirector_stats);
