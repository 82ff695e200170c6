// SPDX-License-Identifier: MIT OR GPL-2.0-only
/*
 * The router's per-packet work on ingress (XDP): packet return (decapsulate
 * GRE from engines, L2 returns by MAC), SYN-ACK MSS clamping, then the shared
 * classification (classify.h: service, lists, bucket, connection table),
 * ICMP fragmentation-needed for DF packets too big for GRE, and redirection
 * by GRE or L2 rewrite, failing open whenever anything is missing. And the
 * same classification at tc egress, for "redirect out" (tc_redirect_out).
 *
 * The Rust model in redirector-ebpf/src/model.rs is the specification; this
 * is its fast twin, and the differential tests hold them to the same verdict,
 * output bytes and counters. Keep the order of the checks the same on both
 * sides: it decides which reason a packet is counted under.
 */
#include <linux/pkt_cls.h>
#include "classify.h"

/* The service's failed-open counter, besides the reason; the packet passes. */
static __always_inline int fail_open(struct redirector_stats *st, __u32 reason,
				     __u8 service_id, __u64 bytes)
{
	counted_fail_open(st, reason, service_id, bytes);
	return XDP_PASS;
}

/*
 * ICMP fragmentation needed (type 3 code 4) for a DF packet too big for the
 * engine's path, sent back out of the ingress interface: MACs swapped, VLAN
 * tags kept, from the router's address on the engine's side, announcing the
 * engine's MTU less GRE's 28 bytes, quoting the IP header and 8 bytes of
 * payload. The frame grows by 28 bytes in front (new IP and ICMP headers, the
 * quote stays where it is) and is cut after the quote. The caller checked
 * that the IP packet holds at least ICMP_QUOTE_MIN bytes. A subprogram, not
 * inlined, to keep this rare path out of the common path's registers.
 */
static __attribute__((noinline)) int frag_needed(struct xdp_md *ctx, __u32 l3_off,
						 __u32 ihl_len,
						 const struct redirector_engine *eng,
						 __u64 bytes)
{
	void *data, *data_end;
	__u8 *eth, *icmp;
	struct ipv4 *ip, *orig;
	__u32 sum = 0, quote = ihl_len + 8;
	struct redirector_stats *st = cpu_stats();

	if (!st)
		return XDP_PASS;
	if (bpf_xdp_adjust_head(ctx, -GRE_OVERHEAD))
		return done(st, XDP_PASS, REASON_ADJUST_FAILED, bytes);
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	/* The Ethernet header moves 28 bytes up, never onto itself (l3_off <= 22). */
	if ((void *)(eth + GRE_OVERHEAD + 22) > data_end)
		return XDP_ABORTED;
	__builtin_memcpy(eth, eth + GRE_OVERHEAD + 6, 6);
	__builtin_memcpy(eth + 6, eth + GRE_OVERHEAD, 6);
	__builtin_memcpy(eth + 12, eth + GRE_OVERHEAD + 12, 2);
	if (l3_off >= 18)
		__builtin_memcpy(eth + 14, eth + GRE_OVERHEAD + 14, 4);
	if (l3_off >= 22)
		__builtin_memcpy(eth + 18, eth + GRE_OVERHEAD + 18, 4);

	ip = data + (l3_off & 31);
	icmp = (__u8 *)(ip + 1);
	if ((void *)(icmp + ICMP_SUM_WINDOW) > data_end)
		return XDP_ABORTED;
	orig = (struct ipv4 *)(icmp + 8);
	ip->ver_ihl = 0x45;
	ip->tos = ICMP_TOS;
	ip->tot_len = bpf_htons(28 + quote);
	ip->id = 0;
	ip->frag_off = 0;
	ip->ttl = 64;
	ip->protocol = IPPROTO_ICMP_;
	ip->check = 0;
	ip->daddr = orig->saddr;
	ip->saddr = eng->router_addr;
	ip->check = ipv4_checksum(ip);

	icmp[0] = ICMP_DEST_UNREACH_;
	icmp[1] = ICMP_FRAG_NEEDED_;
	icmp[2] = 0;
	icmp[3] = 0;
	icmp[4] = 0;
	icmp[5] = 0;
	icmp[6] = (eng->mtu - GRE_OVERHEAD) >> 8;
	icmp[7] = (eng->mtu - GRE_OVERHEAD) & 0xff;
#pragma unroll
	for (int i = 0; i < ICMP_SUM_WINDOW / 2; i++) {
		if (i * 2 < 8 + quote)
			sum += ((__u16 *)icmp)[i];
	}
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	((__u16 *)icmp)[1] = ~sum & 0xffff;

	/* The frame is bytes + GRE_OVERHEAD long now; keep l3_off + 28 + quote of
	 * it (scalars only: no arithmetic on the packet pointers). */
	if (bpf_xdp_adjust_tail(ctx, (int)(l3_off + quote) - (int)bytes))
		return XDP_ABORTED;
	return done(st, XDP_TX, REASON_TOO_BIG_DF, bytes);
}

/*
 * Whether a frame comes from the MAC of an engine that returns at L2 (behind
 * the MAC filter) and not from that engine's own address; counts the return
 * for the engine. eth: 14 bytes checked. A subprogram, to keep this path out
 * of the common path's registers.
 */
static __attribute__((noinline)) int l2_returned(__u8 *eth, __u32 saddr,
						 const struct redirector_slot *t, __u32 slot,
						 __u64 bytes)
{
	__u32 low = ((__u32)eth[10] << 8) | eth[11];
	struct redirector_mac_key mk = { .slot = slot };
	__u32 *idx, e;
	struct redirector_stats *st = cpu_stats();

	if (!st)
		return 0;
	if (!((t->mac_filter[low >> 6] >> (low & 63)) & 1))
		return 0;
	__builtin_memcpy(mk.mac, eth + 6, 6);
	idx = bpf_map_lookup_elem(&engine_macs, &mk);
	if (!idx)
		return 0;
	e = *idx & (MAX_ENGINES - 1);
	if (t->engines[e].addr == saddr)
		return 0;
	count(st, STATS_ENGINE_BASE + e * STATS_PER_ENGINE + STATS_ENGINE_RETURNED, bytes);
	return 1;
}

/*
 * Packet return: a GRE packet from an engine. Decapsulates WCCP GRE (with or
 * without redirect header) and hands the original packet to the stack;
 * anything else from an engine passes untouched.
 */
static __always_inline int packet_return(struct redirector_stats *st, struct xdp_md *ctx, __u32 l3_off,
					 __u32 ihl_len, __u32 frag, __u32 engine,
					 __u64 bytes)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 remove = ihl_len + 4;
	__u8 *gre;

	if (frag)
		return done(st, XDP_PASS, REASON_RETURN_BAD, bytes);
	gre = data + l3_off + ihl_len;
	if ((void *)(gre + 5) > data_end)
		return done(st, XDP_PASS, REASON_RETURN_BAD, bytes);
	if (gre[0] != 0 || gre[1] != 0 || gre[2] != 0x88 || gre[3] != 0x3e)
		return done(st, XDP_PASS, REASON_RETURN_BAD, bytes);
	if ((gre[4] >> 4) != 4)
		remove += 4;
	/* The inner IPv4 header, at least its fixed part. */
	{
		__u8 *inner = gre + (remove - ihl_len);

		if ((void *)(inner + 20) > data_end)
			return done(st, XDP_PASS, REASON_RETURN_BAD, bytes);
		if ((inner[0] >> 4) != 4)
			return done(st, XDP_PASS, REASON_RETURN_BAD, bytes);
	}
	/* Move the Ethernet header (with its tags) up against the inner packet;
	 * remove >= 28 > l3_off, so the copies never overlap. */
	{
		__u8 *eth = data;
		__u8 *to = data + remove;

		if ((void *)(to + 22) > data_end || (void *)(eth + 22) > data_end)
			return done(st, XDP_PASS, REASON_RETURN_BAD, bytes);
		__builtin_memcpy(to, eth, 14);
		if (l3_off >= 18)
			__builtin_memcpy(to + 14, eth + 14, 4);
		if (l3_off >= 22)
			__builtin_memcpy(to + 18, eth + 18, 4);
	}
	if (bpf_xdp_adjust_head(ctx, (int)remove))
		return done(st, XDP_PASS, REASON_ADJUST_FAILED, bytes);
	count(st, STATS_ENGINE_BASE + (engine & (MAX_ENGINES - 1)) * STATS_PER_ENGINE +
		      STATS_ENGINE_RETURNED,
	      bytes);
	return done(st, XDP_PASS, REASON_RETURN_GRE, bytes);
}

#ifdef REDIRECTOR_BENCH_FLOOR
/*
 * Floor build (redirect_floor.c) only: what classify() decides for a packet
 * whose flow hashes to bucket 0 of the best service, without looking at the
 * packet. Timing it tells what everything around classification costs (parse,
 * lookups, checks, counters, encapsulation and its undo): the least any
 * program doing that work can cost on the machine at hand.
 */
static __always_inline int floor_decision(const struct redirector_slot *t,
					  struct redirect_decision *d)
{
	__u32 engine = t->buckets[0].engine;

	d->svc = &t->services[0];
	d->eng = &t->engines[engine];
	d->engine = engine;
	d->primary = 0;
	d->secondary = 0;
	d->alternate = 0;
	d->syn = 0;
	d->service_id = t->services[0].service_id;
	return CLASSIFY_REDIRECT;
}
#endif

SEC("xdp")
int xdp_redirect(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 bytes = data_end - data;
	__u32 l3_off = 14;
	__u16 proto;
	struct ipv4 *ip;
	__u32 ihl_len, slot, iface_flags = 0, frag;
	struct redirector_control *ctl;
	const struct redirector_slot *t;
	struct redirector_stats *st = cpu_stats();

	if (!st)
		return XDP_PASS;
	if (data + 14 > data_end)
		return done(st, XDP_PASS, REASON_MALFORMED, bytes);
	proto = ((__u16 *)data)[6];
	if (proto == bpf_htons(ETH_P_8021Q_) || proto == bpf_htons(ETH_P_8021AD_)) {
		if (data + 18 > data_end)
			return done(st, XDP_PASS, REASON_MALFORMED, bytes);
		proto = ((__u16 *)data)[8];
		l3_off = 18;
		if (proto == bpf_htons(ETH_P_8021Q_)) {
			if (data + 22 > data_end)
				return done(st, XDP_PASS, REASON_MALFORMED, bytes);
			proto = ((__u16 *)data)[10];
			l3_off = 22;
		}
	}
	if (proto != bpf_htons(ETH_P_IP))
		return done(st, XDP_PASS, REASON_NOT_IPV4, bytes);

	ip = data + l3_off;
	if ((void *)(ip + 1) > data_end)
		return done(st, XDP_PASS, REASON_MALFORMED, bytes);
	if ((ip->ver_ihl >> 4) != 4 || (ip->ver_ihl & 0xf) < 5)
		return done(st, XDP_PASS, REASON_MALFORMED, bytes);
	ihl_len = (ip->ver_ihl & 0xf) * 4;
	if ((void *)ip + ihl_len > data_end)
		return done(st, XDP_PASS, REASON_MALFORMED, bytes);
	if (bpf_ntohs(ip->tot_len) < ihl_len ||
	    (void *)ip + bpf_ntohs(ip->tot_len) > data_end)
		return done(st, XDP_PASS, REASON_MALFORMED, bytes);
	frag = ip->frag_off & bpf_htons(IP_MF | IP_OFFSET);

	ctl = bpf_map_lookup_elem(&control, &key_zero);
	if (!ctl || !(ctl->flags & CONTROL_ENABLED))
		return done(st, XDP_PASS, REASON_DISABLED, bytes);
	slot = ctl->generation & 1;
	t = bpf_map_lookup_elem(&slots, &slot);
	if (!t)
		return done(st, XDP_PASS, REASON_DISABLED, bytes);

	if (ip->protocol == IPPROTO_GRE) {
		struct redirector_engine_key ek = { .slot = slot, .addr = ip->saddr };
		__u32 *engine = bpf_map_lookup_elem(&engine_addrs, &ek);

		if (engine)
			return packet_return(st, ctx, l3_off, ihl_len, frag, *engine, bytes);
	}

	if ((ctl->flags & CONTROL_IFACES) && ctx->ingress_ifindex < MAX_IFINDEX) {
		__u32 ifindex = ctx->ingress_ifindex;
		__u32 *f = bpf_map_lookup_elem(&ifaces, &ifindex);

		if (f)
			iface_flags = *f;
	}
	if (iface_flags & IFACE_EXCLUDED)
		return done(st, XDP_PASS, REASON_EXCLUDED, bytes);

	/*
	 * SYN-ACKs toward the clients of GRE services are MSS-clamped wherever
	 * they come from (the engines' arrive on engine-facing interfaces). The
	 * model clamps here; the program clamps in the two early returns below
	 * and otherwise in classify(), once it has the TCP header in hand, so that
	 * the common path pays one flags test. Every outcome in between passes
	 * the packet unchanged or is one of those returns, so the bytes agree.
	 */

	/* L2 return: from the MAC of an engine that returns at L2, and not from
	 * its own address (its own connections are told apart later). Only when
	 * the slot has such engines, then behind the MAC filter. */
	if ((ctl->flags & (CONTROL_L2_RETURN << slot)) &&
	    l2_returned(data, ip->saddr, t, slot, bytes)) {
		clamp_if_synack(st, ip, ihl_len, data_end, t, frag, bytes);
		return done(st, XDP_PASS, REASON_RETURN_L2, bytes);
	}

	if (iface_flags & IFACE_ENGINE_FACING) {
		clamp_if_synack(st, ip, ihl_len, data_end, t, frag, bytes);
		return done(st, XDP_PASS, REASON_ENGINE_FACING, bytes);
	}
	if (frag)
		return done(st, XDP_PASS, REASON_FRAGMENT, bytes);

	struct redirect_decision d;
	struct redirector_flow flow;
#ifdef REDIRECTOR_BENCH_FLOOR
	int classified = floor_decision(t, &d);
#else
	int classified = classify(st, ip, ihl_len, data_end, t, slot, ctl, bytes, 1, &d, &flow);
#endif

	if (classified != CLASSIFY_REDIRECT)
		return XDP_PASS;
	const struct redirector_engine *eng = d.eng;
	__u8 service_id = d.service_id;
	__u32 tot_len = bpf_ntohs(ip->tot_len);

	if (eng->method == METHOD_GRE && eng->mtu &&
	    tot_len + GRE_OVERHEAD > eng->mtu) {
		if (!(ip->frag_off & bpf_htons(IP_DF)))
			return fail_open(st, REASON_TOO_BIG, service_id, bytes);
		if ((void *)ip + ICMP_QUOTE_MIN > data_end)
			return fail_open(st, REASON_TOO_BIG_DF, service_id, bytes);
		return frag_needed(ctx, l3_off, ihl_len, eng, bytes);
	}

	remember_syn(&d, &flow);

	__u32 reason;

	/* An engine behind a VLAN device (router-on-a-stick): its frames carry
	 * the device's 802.1Q tag and leave by its parent. */
	__u32 tag = eng->vlan_tci ? 4 : 0;

	if (eng->method == METHOD_L2) {
		/* The client's tags go, the engine's (if any) comes: the frame's
		 * start moves to where the MACs and that tag end at the inner
		 * EtherType, which stays in place. */
		int move = (int)l3_off - 14 - (int)tag;

		if (move && bpf_xdp_adjust_head(ctx, move))
			return fail_open(st, REASON_ADJUST_FAILED, service_id, bytes);
		data = (void *)(long)ctx->data;
		data_end = (void *)(long)ctx->data_end;
		if (data + 18 > data_end)
			return XDP_ABORTED;
		put_engine_macs(data, eng);
		if (tag)
			put_vlan_tag(data, eng->vlan_tci);
		reason = REASON_REDIRECT_L2;
	} else {
		/* Header fields read before the frame moves. */
		__u8 tos = ip->tos;
		__u16 df = ip->frag_off & bpf_htons(IP_DF) ? IP_DF : 0;
#ifdef REDIRECTOR_BENCH
		__u64 saved_eth0 = *(__u64 *)data;
		__u32 saved_eth8 = *(__u32 *)((__u8 *)data + 8);
		__u16 saved_eth12 = *(__u16 *)((__u8 *)data + 12);
#endif

		if (bpf_xdp_adjust_head(ctx, (int)l3_off - ENCAP_LEN - (int)tag))
			return fail_open(st, REASON_ADJUST_FAILED, service_id, bytes);
		data = (void *)(long)ctx->data;
		data_end = (void *)(long)ctx->data_end;
		/* (Every encapsulated frame is longer: 42 + 28 bytes at least.) */
		if (data + ENCAP_LEN + 4 > data_end)
			return XDP_ABORTED;
		__u8 *p = data;

		put_engine_macs(p, eng);
		/* Two copies of the header writes, so that untagged frames (the
		 * common case) write at constant offsets. */
		if (__builtin_expect(tag != 0, 0)) {
			put_vlan_tag(p, eng->vlan_tci);
			put_gre_headers(p + 4, &d, tot_len, tos, df);
		} else {
			put_gre_headers(p, &d, tot_len, tos, df);
		}
		reason = REASON_REDIRECT_GRE;
#ifdef REDIRECTOR_BENCH
		/* Bench-only build (redirect_bench.c): put the frame back as it came,
		 * so that BPF_PROG_TEST_RUN's repeat runs the whole redirect path on
		 * the same input every time instead of on its own GRE output. */
		if (l3_off == 14 && !tag) {
			put64(p + GRE_OVERHEAD, saved_eth0);
			put32(p + GRE_OVERHEAD + 8, saved_eth8);
			put16(p + GRE_OVERHEAD + 12, saved_eth12);
			if (bpf_xdp_adjust_head(ctx, GRE_OVERHEAD))
				return XDP_ABORTED;
		}
#endif
	}

	count_redirected(st, &d, reason, bytes);
	if (eng->ifindex == 0)
		return XDP_TX;
	return bpf_redirect(eng->ifindex, 0);
}

/*
 * "Redirect out" (Cisco's `ip wccp N redirect out`): tc egress on the
 * interfaces the operator names, for traffic the router forwards out of them.
 * The same classification as at ingress; no packet return (the XDP program
 * does that where packets arrive), no MSS clamp, and no ICMP: a packet too big
 * for GRE leaves unredirected. TCP GSO packets are sent in GRE for the kernel
 * to segment. Packets that arrived on an engine-facing or
 * excluded interface (the engines' returns among them) are never redirected
 * here. Untagged Ethernet only: at egress a VLAN tag is usually still skb
 * metadata, not bytes.
 */
SEC("classifier")
int tc_redirect_out(struct __sk_buff *skb)
{
	struct redirector_stats *st = cpu_stats();

	if (!st)
		return TC_ACT_OK;
	/* A forwarded skb often keeps its payload in page fragments; the checks
	 * below (as at XDP) need the whole packet in the linear part. Only such
	 * packets pay for the pull. */
	if ((long)skb->data_end - (long)skb->data < (long)skb->len &&
	    bpf_skb_pull_data(skb, skb->len))
		return done(st, TC_ACT_OK, REASON_MALFORMED, skb->len);

	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u64 bytes = data_end - data;
	__u32 ihl_len, slot, iface_flags = 0, tot_len;
	struct redirector_control *ctl;
	const struct redirector_slot *t;
	struct ipv4 *ip;

	if (data + 14 > data_end)
		return done(st, TC_ACT_OK, REASON_MALFORMED, bytes);
	if (((__u16 *)data)[6] != bpf_htons(ETH_P_IP))
		return done(st, TC_ACT_OK, REASON_NOT_IPV4, bytes);
	ip = data + 14;
	if ((void *)(ip + 1) > data_end)
		return done(st, TC_ACT_OK, REASON_MALFORMED, bytes);
	if ((ip->ver_ihl >> 4) != 4 || (ip->ver_ihl & 0xf) < 5)
		return done(st, TC_ACT_OK, REASON_MALFORMED, bytes);
	ihl_len = (ip->ver_ihl & 0xf) * 4;
	tot_len = bpf_ntohs(ip->tot_len);
	if ((void *)ip + ihl_len > data_end || tot_len < ihl_len ||
	    (void *)ip + tot_len > data_end)
		return done(st, TC_ACT_OK, REASON_MALFORMED, bytes);

	ctl = bpf_map_lookup_elem(&control, &key_zero);
	if (!ctl || !(ctl->flags & CONTROL_ENABLED))
		return done(st, TC_ACT_OK, REASON_DISABLED, bytes);
	slot = ctl->generation & 1;
	t = bpf_map_lookup_elem(&slots, &slot);
	if (!t)
		return done(st, TC_ACT_OK, REASON_DISABLED, bytes);

	if ((ctl->flags & CONTROL_IFACES) && skb->ingress_ifindex < MAX_IFINDEX) {
		__u32 ifindex = skb->ingress_ifindex;
		__u32 *f = bpf_map_lookup_elem(&ifaces, &ifindex);

		if (f)
			iface_flags = *f;
	}
	if (iface_flags & IFACE_EXCLUDED)
		return done(st, TC_ACT_OK, REASON_EXCLUDED, bytes);
	if (iface_flags & IFACE_ENGINE_FACING)
		return done(st, TC_ACT_OK, REASON_ENGINE_FACING, bytes);
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return done(st, TC_ACT_OK, REASON_FRAGMENT, bytes);

	struct redirect_decision d;
	struct redirector_flow flow;

	if (classify(st, ip, ihl_len, data_end, t, slot, ctl, bytes, 0, &d, &flow) !=
	    CLASSIFY_REDIRECT)
		return TC_ACT_OK;
	const struct redirector_engine *eng = d.eng;

	/*
	 * A GSO packet (segments that GRO merged on the way in) leaves as one GRE
	 * packet per segment: encapsulated with the kernel told it is IPv4-in-GRE,
	 * it is segmented after us, each segment carrying a copy of the outer
	 * headers, and its segments shrink by the 28 bytes GRE adds, so that each
	 * is as long as the segment it came from. Failing it open instead would
	 * send part of a redirected flow past its engine. Its MTU check is on
	 * that segment length.
	 */
	__u32 len = tot_len, tcp_gso = skb->gso_size && ip->protocol == IPPROTO_TCP;

	if (tcp_gso) {
		__u8 *th = (__u8 *)ip + ihl_len;

		/* classify() checked these 20 bytes; the verifier wants it again. */
		if ((void *)(th + 20) > data_end)
			return done(st, TC_ACT_OK, REASON_MALFORMED, bytes);
		len = ihl_len + (th[12] >> 4) * 4 + skb->gso_size;
	}
	if (eng->method == METHOD_GRE && eng->mtu && len + GRE_OVERHEAD > eng->mtu) {
		counted_fail_open(st, ip->frag_off & bpf_htons(IP_DF) ? REASON_TOO_BIG_DF :
								     REASON_TOO_BIG,
				  d.service_id, bytes);
		return TC_ACT_OK;
	}
	remember_syn(&d, &flow);

	__u32 reason;
	__u8 tos = ip->tos;
	__u16 df = ip->frag_off & bpf_htons(IP_DF) ? IP_DF : 0;

	/* An engine behind a VLAN device: the tag as skb metadata, which the
	 * parent device (or the stack for it) inserts. First, so that a refusal
	 * leaves the packet as it was to fail open. */
	if (eng->vlan_tci &&
	    bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q_), bpf_ntohs(eng->vlan_tci))) {
		counted_fail_open(st, REASON_ADJUST_FAILED, d.service_id, bytes);
		return TC_ACT_OK;
	}
	if (eng->method == METHOD_L2) {
		reason = REASON_REDIRECT_L2;
	} else {
		/*
		 * Told that it is IPv4-in-GRE, the kernel also finishes a partial
		 * inner checksum (a forwarded packet from a sender that offloads
		 * it) in software where the egress device cannot do it inside a
		 * tunnel, instead of handing the device offsets it misreads. Other
		 * GSO packets than TCP the kernel refuses to grow: they fail open.
		 */
		if (bpf_skb_adjust_room(skb, GRE_OVERHEAD, BPF_ADJ_ROOM_MAC,
					BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 |
						BPF_F_ADJ_ROOM_ENCAP_L4_GRE)) {
			if (eng->vlan_tci)
				bpf_skb_vlan_pop(skb);
			counted_fail_open(st, REASON_ADJUST_FAILED, d.service_id, bytes);
			return TC_ACT_OK;
		}
		if (tcp_gso)
			count(st, STATS_GSO_ENCAPSULATED, bytes);
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
		if (data + ENCAP_LEN > data_end)
			return TC_ACT_SHOT;
		put_gre_headers(data, &d, tot_len, tos, df);
		reason = REASON_REDIRECT_GRE;
	}
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	if (data + 14 > data_end)
		return TC_ACT_SHOT;
	put_engine_macs(data, eng);

	count_redirected(st, &d, reason, bytes);
	/* Engine index 0 in ifindex: out of the interface it was leaving by. */
	if (eng->ifindex == 0)
		return TC_ACT_OK;
	return bpf_redirect(eng->ifindex, 0);
}

/*
 * The kernel's jiffies, for the controller: BPF_PROG_TEST_RUN this on a frame
 * of at least 8 bytes and read them back (host order). User space has no other
 * exact view of jiffies, which the heartbeat is written in.
 */
SEC("xdp")
int xdp_clock(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 now = bpf_jiffies64();

	if (data + 8 > data_end)
		return XDP_ABORTED;
	__builtin_memcpy(data, &now, 8);
	return XDP_PASS;
}

REDIRECTOR_LICENSE;
