/* SPDX-License-Identifier: MIT OR GPL-2.0-only */
/*
 * Shared by every eBPF program of the redirector, and the source of truth for
 * the layout of map keys and values: each struct here has a #[repr(C)] twin in
 * redirector-ebpf/src/layout.rs, and layout_check.c puts it in BTF so that the
 * Rust tests can compare sizes and field offsets.
 */
#ifndef REDIRECTOR_H
#define REDIRECTOR_H

#include <linux/types.h>
#include <bpf/bpf_helpers.h>

/*
 * The kernel refuses GPL-only helpers to programs whose license string is not
 * GPL-compatible; "Dual MIT/GPL" is, and matches this SPDX line. One use per
 * object that holds programs.
 */
#define REDIRECTOR_LICENSE char _license[] SEC("license") = "Dual MIT/GPL"

/* Packet and byte counts, the value of per-CPU counter maps.
 * Rust twin: redirector_ebpf::layout::Counters. */
struct redirector_counters {
	__u64 packets;
	__u64 bytes;
};

#endif /* REDIRECTOR_H */
