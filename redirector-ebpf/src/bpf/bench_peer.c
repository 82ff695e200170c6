// SPDX-License-Identifier: MIT OR GPL-2.0-only
/*
 * Helpers of `cargo xtask bench dataplane`, never part of the data plane:
 *
 *   xdp_adjust_pair  the cost of the bench build's undo (see below).
 *   xdp_tx        the baseline of the live-frames row: the same forwarding
 *                 action as the redirect program (XDP_TX) with no work.
 *   xdp_validate  on the engine-side peer: checks every frame that arrives
 *                 (outer Ethernet, IPv4, GRE 0x883E, redirect header, inner
 *                 IPv4 and TCP port for a redirected frame; Ethernet, IPv4 and
 *                 TCP port for a forwarded one), counts good and bad, then puts
 *                 the sender's original Ethernet header back where the frame's
 *                 page had it and drops. Live frames recycle pages without
 *                 resetting their bytes, and the encapsulation overwrote that
 *                 header: without the repair the next run on the page would
 *                 read garbage.
 *   xdp_inject    the generator of the kernel-forwarding row: restores the
 *                 frame's Ethernet and IPv4 headers from a template (forwarding
 *                 decrements the TTL in the recycled page) and passes the frame
 *                 to the stack.
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>

#define MODE_GRE 1       /* expect WCCP GRE */
#define MODE_PLAIN 2     /* expect the frame as sent */
#define MODE_FORWARDED 3 /* expect the frame as the kernel forwards it */

struct bench_config {
	__u32 mode;
	/* Outer destination must be in engine_net/24 (network order). */
	__u32 engine_net;
	__u8 service_id;
	__u8 ttl;
	__u8 reserved[2];
	/* Sender's Ethernet + IPv4 header, restored by xdp_validate (first 14
	 * bytes, GRE mode) and by xdp_inject (all 34). */
	__u8 header[36];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bench_config);
} bench_config SEC(".maps");

/* [0] good frames, [1] bad frames. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} bench_counts SEC(".maps");

static __always_inline int tally(__u32 good)
{
	__u32 key = good ? 0 : 1;
	__u64 *c = bpf_map_lookup_elem(&bench_counts, &key);

	if (c)
		*c += 1;
	return XDP_DROP;
}

/* Inner (or only) IPv4 + TCP to port 80 or 443. */
static __always_inline int tcp_ok(__u8 *ip, void *data_end)
{
	__u8 *tcp = ip + 20;
	__u16 dport;

	if ((void *)(tcp + 4) > data_end)
		return 0;
	if (ip[0] != 0x45 || ip[9] != IPPROTO_TCP)
		return 0;
	dport = ((__u16)tcp[2] << 8) | tcp[3];
	return dport == 80 || dport == 443;
}

SEC("xdp")
int xdp_validate(struct xdp_md *ctx)
{
	__u8 *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	struct bench_config *cfg = bpf_map_lookup_elem(&bench_config, &zero);

	if (!cfg || (void *)(data + 14 + 20 + 4) > data_end)
		return tally(0);
	if (data[12] != 0x08 || data[13] != 0x00)
		return tally(0);
	if (cfg->mode == MODE_GRE) {
		__u8 *ip = data + 14, *gre = ip + 20;
		__u32 daddr;
		int good;

		if ((void *)(data + 14 + 20 + 8 + 24) > data_end)
			return tally(0);
		__builtin_memcpy(&daddr, ip + 16, 4);
		good = ip[0] == 0x45 && ip[9] == IPPROTO_GRE &&
		       (daddr & 0x00ffffff) == (cfg->engine_net & 0x00ffffff) &&
		       gre[0] == 0 && gre[1] == 0 && gre[2] == 0x88 && gre[3] == 0x3e &&
		       (gre[4] >> 4) == 0 && gre[5] == cfg->service_id &&
		       tcp_ok(gre + 8, data_end);
		/* The sender's frame began 28 bytes in: repair its Ethernet header. */
		__builtin_memcpy(data + 28, cfg->header, 14);
		return tally(good);
	}
	if (cfg->mode == MODE_FORWARDED && data[14 + 8] != cfg->ttl)
		return tally(0);
	return tally(tcp_ok(data + 14, data_end));
}

/*
 * The price of redirect_bench's undo: the same bpf_xdp_adjust_head pair (grow
 * by the encapsulation, shrink back) with nothing between. Half of its cost
 * over XDP_PASS is the one helper call the bench build adds to the program.
 */
SEC("xdp")
int xdp_adjust_pair(struct xdp_md *ctx)
{
	if (bpf_xdp_adjust_head(ctx, -28))
		return XDP_ABORTED;
	if (bpf_xdp_adjust_head(ctx, 28))
		return XDP_ABORTED;
	return XDP_PASS;
}

SEC("xdp")
int xdp_tx(struct xdp_md *ctx)
{
	return XDP_TX;
}

SEC("xdp")
int xdp_inject(struct xdp_md *ctx)
{
	__u8 *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	struct bench_config *cfg = bpf_map_lookup_elem(&bench_config, &zero);

	if (!cfg || (void *)(data + 34) > data_end)
		return XDP_PASS;
	__builtin_memcpy(data, cfg->header, 34);
	return XDP_PASS;
}

char _license[] SEC("license") = "Dual MIT/GPL";
