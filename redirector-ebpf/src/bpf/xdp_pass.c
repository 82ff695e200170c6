// SPDX-License-Identifier: MIT OR GPL-2.0-only
/*
 * The smallest XDP program: every frame goes on to the kernel's stack untouched.
 * It proves the build and load path, and it is the baseline that benchmarks
 * divide by, so it must stay exactly this trivial.
 */
#include <linux/bpf.h>
#include "redirector.h"

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

REDIRECTOR_LICENSE;
