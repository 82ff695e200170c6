// SPDX-License-Identifier: MIT OR GPL-2.0-only
/*
 * The router's per-packet work on ingress (XDP): packet return (decapsulate
 * GRE from engines), then classification, bucket, connection table and
 * redirection by GRE or L2 rewrite, failing open whenever anything is missing.
 *
 * The Rust model in redirector-ebpf/src/model.rs is the specification; this
 * is its fast twin, and the differential tests hold them to the same verdict,
 * output bytes and counters. Keep the order of the checks the same on both
 * sides: it decides which reason a packet is counted under.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <bpf/bpf_endian.h>
#include "redirector.h"

#define ETH_P_8021Q_ 0x8100
#define ETH_P_8021AD_ 0x88a8
#define IP_MF 0x2000
#define IP_DF 0x4000
#define IP_OFFSET 0x1fff
#define TCP_SYN 0x02
#define TCP_ACK 0x10
/* Outer IPv4 + GRE + redirect header. */
#define GRE_OVERHEAD 28
#define ENCAP_LEN (14 + GRE_OVERHEAD)

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct redirector_control);
} control SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_IFINDEX);
	__type(key, __u32);
	__type(value, __u32);
} ifaces SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SLOTS * PORT_PROTOCOLS * PORTS);
	__type(key, __u32);
	__type(value, struct redirector_port);
} ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SLOTS);
	__type(key, __u32);
	__type(value, struct redirector_table);
} tables SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SLOTS * MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct redirector_service);
} services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SLOTS * MAX_SERVICES * BUCKETS);
	__type(key, __u32);
	__type(value, struct redirector_bucket);
} buckets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SLOTS * MAX_ENGINES);
	__type(key, __u32);
	__type(value, struct redirector_engine);
} engines SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SLOTS * FILTER_WORDS);
	__type(key, __u32);
	__type(value, __u64);
} engine_filter SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SLOTS * MAX_ENGINES);
	__type(key, struct redirector_engine_key);
	__type(value, __u32);
} engine_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct redirector_flow);
	__type(value, struct redirector_conn);
} conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STATS_ENTRIES);
	__type(key, __u32);
	__type(value, struct redirector_counters);
} stats SEC(".maps");

struct ipv4 {
	__u8 ver_ihl;
	__u8 tos;
	__u16 tot_len;
	__u16 id;
	__u16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__u16 check;
	__u32 saddr;
	__u32 daddr;
};

static __always_inline void count(__u32 index, __u64 bytes)
{
	struct redirector_counters *c = bpf_map_lookup_elem(&stats, &index);

	if (c) {
		c->packets += 1;
		c->bytes += bytes;
	}
}

static __always_inline int done(int verdict, __u32 reason, __u64 bytes)
{
	count(reason, bytes);
	return verdict;
}

/* The service's failed-open counter, besides the reason. */
static __always_inline int fail_open(__u32 reason, __u8 service_id, __u64 bytes)
{
	count(STATS_SERVICE_BASE + (__u32)service_id * STATS_PER_SERVICE +
		      STATS_SERVICE_FAILED_OPEN,
	      bytes);
	return done(XDP_PASS, reason, bytes);
}

static __always_inline __u32 fold(__u32 key)
{
	key ^= key >> 16;
	key ^= key >> 8;
	return key & 0xff;
}

/* The draft's key: the XOR of the fields the (primary or alternate) flags
 * select, addresses and ports as host-order numbers. */
static __always_inline __u32 hash_key(__u32 flags, __u32 saddr, __u32 daddr,
				      __u32 sport, __u32 dport)
{
	__u32 key = 0;

	if (flags & SF_SRC_IP_HASH)
		key ^= saddr;
	if (flags & SF_DST_IP_HASH)
		key ^= daddr;
	if (flags & SF_SRC_PORT_HASH)
		key ^= sport;
	if (flags & SF_DST_PORT_HASH)
		key ^= dport;
	return key;
}

/* Index of the mask value a packet matches (see redirector_service). */
static __always_inline __u32 mask_index(const struct redirector_service *svc,
					__u32 saddr, __u32 daddr, __u32 sport,
					__u32 dport)
{
	__u32 index = 0;

#pragma unroll
	for (int k = 0; k < MASK_POSITIONS; k++) {
		__u32 pos = svc->mask_pos[k];
		__u32 bit;

		if (pos >= 96)
			break;
		if (pos < 16)
			bit = dport >> pos;
		else if (pos < 32)
			bit = sport >> (pos - 16);
		else if (pos < 64)
			bit = daddr >> (pos - 32);
		else
			bit = saddr >> (pos - 64);
		index |= (bit & 1) << k;
	}
	return index;
}

static __always_inline __u16 ipv4_checksum(const struct ipv4 *ip)
{
	const __u16 *w = (const __u16 *)ip;
	__u32 sum = 0;

#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += w[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum & 0xffff;
}

/*
 * Packet return: a GRE packet from an engine. Decapsulates WCCP GRE (with or
 * without redirect header) and hands the original packet to the stack;
 * anything else from an engine passes untouched.
 */
static __always_inline int packet_return(struct xdp_md *ctx, __u32 l3_off,
					 __u32 ihl_len, __u32 frag, __u32 engine,
					 __u64 bytes)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 remove = ihl_len + 4;
	__u8 *gre;

	if (frag)
		return done(XDP_PASS, REASON_RETURN_BAD, bytes);
	gre = data + l3_off + ihl_len;
	if ((void *)(gre + 5) > data_end)
		return done(XDP_PASS, REASON_RETURN_BAD, bytes);
	if (gre[0] != 0 || gre[1] != 0 || gre[2] != 0x88 || gre[3] != 0x3e)
		return done(XDP_PASS, REASON_RETURN_BAD, bytes);
	if ((gre[4] >> 4) != 4)
		remove += 4;
	/* The inner IPv4 header, at least its fixed part. */
	{
		__u8 *inner = gre + (remove - ihl_len);

		if ((void *)(inner + 20) > data_end)
			return done(XDP_PASS, REASON_RETURN_BAD, bytes);
		if ((inner[0] >> 4) != 4)
			return done(XDP_PASS, REASON_RETURN_BAD, bytes);
	}
	/* Move the Ethernet header (with its tags) up against the inner packet;
	 * remove >= 28 > l3_off, so the copies never overlap. */
	{
		__u8 *eth = data;
		__u8 *to = data + remove;

		if ((void *)(to + 22) > data_end || (void *)(eth + 22) > data_end)
			return done(XDP_PASS, REASON_RETURN_BAD, bytes);
		__builtin_memcpy(to, eth, 14);
		if (l3_off >= 18)
			__builtin_memcpy(to + 14, eth + 14, 4);
		if (l3_off >= 22)
			__builtin_memcpy(to + 18, eth + 18, 4);
	}
	if (bpf_xdp_adjust_head(ctx, (int)remove))
		return done(XDP_PASS, REASON_ADJUST_FAILED, bytes);
	count(STATS_ENGINE_BASE + (engine & (MAX_ENGINES - 1)) * STATS_PER_ENGINE +
		      STATS_ENGINE_RETURNED,
	      bytes);
	return done(XDP_PASS, REASON_RETURN_GRE, bytes);
}

SEC("xdp")
int xdp_redirect(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 bytes = data_end - data;
	__u32 zero = 0, l3_off = 14, key;
	__u16 proto;
	struct ipv4 *ip;
	__u32 ihl_len, slot, iface_flags = 0, frag;
	struct redirector_control *ctl;

	if (data + 14 > data_end)
		return done(XDP_PASS, REASON_MALFORMED, bytes);
	proto = ((__u16 *)data)[6];
	if (proto == bpf_htons(ETH_P_8021Q_) || proto == bpf_htons(ETH_P_8021AD_)) {
		if (data + 18 > data_end)
			return done(XDP_PASS, REASON_MALFORMED, bytes);
		proto = ((__u16 *)data)[8];
		l3_off = 18;
		if (proto == bpf_htons(ETH_P_8021Q_)) {
			if (data + 22 > data_end)
				return done(XDP_PASS, REASON_MALFORMED, bytes);
			proto = ((__u16 *)data)[10];
			l3_off = 22;
		}
	}
	if (proto != bpf_htons(ETH_P_IP))
		return done(XDP_PASS, REASON_NOT_IPV4, bytes);

	ip = data + l3_off;
	if ((void *)(ip + 1) > data_end)
		return done(XDP_PASS, REASON_MALFORMED, bytes);
	if ((ip->ver_ihl >> 4) != 4 || (ip->ver_ihl & 0xf) < 5)
		return done(XDP_PASS, REASON_MALFORMED, bytes);
	ihl_len = (ip->ver_ihl & 0xf) * 4;
	if ((void *)ip + ihl_len > data_end)
		return done(XDP_PASS, REASON_MALFORMED, bytes);
	if (bpf_ntohs(ip->tot_len) < ihl_len ||
	    (void *)ip + bpf_ntohs(ip->tot_len) > data_end)
		return done(XDP_PASS, REASON_MALFORMED, bytes);
	frag = ip->frag_off & bpf_htons(IP_MF | IP_OFFSET);

	ctl = bpf_map_lookup_elem(&control, &zero);
	if (!ctl || !(ctl->flags & CONTROL_ENABLED))
		return done(XDP_PASS, REASON_DISABLED, bytes);
	slot = ctl->generation & 1;

	if (ip->protocol == IPPROTO_GRE) {
		struct redirector_engine_key ek = { .slot = slot, .addr = ip->saddr };
		__u32 *engine = bpf_map_lookup_elem(&engine_addrs, &ek);

		if (engine)
			return packet_return(ctx, l3_off, ihl_len, frag, *engine, bytes);
	}

	if (ctx->ingress_ifindex < MAX_IFINDEX) {
		__u32 ifindex = ctx->ingress_ifindex;
		__u32 *f = bpf_map_lookup_elem(&ifaces, &ifindex);

		if (f)
			iface_flags = *f;
	}
	if (iface_flags & IFACE_EXCLUDED)
		return done(XDP_PASS, REASON_EXCLUDED, bytes);
	if (iface_flags & IFACE_ENGINE_FACING)
		return done(XDP_PASS, REASON_ENGINE_FACING, bytes);
	if (frag)
		return done(XDP_PASS, REASON_FRAGMENT, bytes);

	/* Ports, and the TCP flags the connection table needs. */
	__u32 proto_i, sport, dport, tcp_flags = 0;
	void *l4 = (void *)ip + ihl_len;

	if (ip->protocol == IPPROTO_TCP) {
		if (l4 + 20 > data_end)
			return done(XDP_PASS, REASON_MALFORMED, bytes);
		tcp_flags = ((__u8 *)l4)[13];
		proto_i = 0;
	} else if (ip->protocol == IPPROTO_UDP) {
		if (l4 + 8 > data_end)
			return done(XDP_PASS, REASON_MALFORMED, bytes);
		proto_i = 1;
	} else {
		return done(XDP_PASS, REASON_NO_SERVICE, bytes);
	}
	sport = bpf_ntohs(((__u16 *)l4)[0]);
	dport = bpf_ntohs(((__u16 *)l4)[1]);

	/* The best-priority service: a maximum of three preferences. */
	__u32 pref = NO_SERVICE_PREF, rank;
	__u32 base = (slot * PORT_PROTOCOLS + proto_i) * PORTS;
	struct redirector_port *pe;
	struct redirector_table *tab;

	key = base + dport;
	pe = bpf_map_lookup_elem(&ports, &key);
	if (pe)
		pref = pe->dst_pref;
	key = base + sport;
	pe = bpf_map_lookup_elem(&ports, &key);
	if (pe && pe->src_pref > pref)
		pref = pe->src_pref;
	tab = bpf_map_lookup_elem(&tables, &slot);
	if (tab && tab->any_pref[proto_i & 1] > pref)
		pref = tab->any_pref[proto_i & 1];
	if (pref == NO_SERVICE_PREF || pref > MAX_SERVICES)
		return done(XDP_PASS, REASON_NO_SERVICE, bytes);
	rank = MAX_SERVICES - pref;

	/* The engines' own connections are never redirected. */
	__u32 saddr = bpf_ntohl(ip->saddr), daddr = bpf_ntohl(ip->daddr);
	{
		__u32 word = slot * FILTER_WORDS + ((saddr & 0xffff) >> 6);
		__u64 *w = bpf_map_lookup_elem(&engine_filter, &word);

		if (w && (*w >> (saddr & 63)) & 1) {
			struct redirector_engine_key ek = { .slot = slot,
							    .addr = ip->saddr };

			if (bpf_map_lookup_elem(&engine_addrs, &ek))
				return done(XDP_PASS, REASON_ENGINE_SOURCE, bytes);
		}
	}

	key = slot * MAX_SERVICES + rank;
	struct redirector_service *svc = bpf_map_lookup_elem(&services, &key);

	if (!svc)
		return done(XDP_PASS, REASON_NO_SERVICE, bytes);
	__u8 service_id = svc->service_id;
	__u32 svc_base = (slot * MAX_SERVICES + rank) * BUCKETS;
	__u32 primary = 0, secondary = 0, alternate = 0;
	struct redirector_bucket *b;

	if (svc->options & SERVICE_MASK)
		primary = mask_index(svc, saddr, daddr, sport, dport) & (BUCKETS - 1);
	else
		primary = fold(hash_key(svc->flags, saddr, daddr, sport, dport));
	key = svc_base + primary;
	b = bpf_map_lookup_elem(&buckets, &key);
	if (!b || !(b->flags & BUCKET_ASSIGNED))
		return fail_open(REASON_UNASSIGNED, service_id, bytes);
	__u32 engine = b->engine, sticky = b->flags & BUCKET_STICKY;

	if ((b->flags & BUCKET_ALTERNATE) && !(svc->options & SERVICE_MASK)) {
		secondary = fold(hash_key(svc->flags >> 8, saddr, daddr, sport, dport));
		alternate = 1;
		key = svc_base + secondary;
		b = bpf_map_lookup_elem(&buckets, &key);
		if (!b || !(b->flags & BUCKET_ASSIGNED))
			return fail_open(REASON_UNASSIGNED, service_id, bytes);
		engine = b->engine;
	}

	/* The connection table: a SYN records its engine; later segments of a
	 * flow in a bucket whose owner changed follow the recorded one. */
	struct redirector_flow flow = {
		.saddr = ip->saddr,
		.daddr = ip->daddr,
		.sport = bpf_htons(sport),
		.dport = bpf_htons(dport),
		.protocol = IPPROTO_TCP,
	};
	__u32 syn = proto_i == 0 && (tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN;
	struct redirector_engine *eng;

	if (proto_i == 0 && !syn && sticky) {
		struct redirector_conn *c = bpf_map_lookup_elem(&conns, &flow);

		if (c) {
			__u32 k2 = slot * MAX_ENGINES + (c->engine & (MAX_ENGINES - 1));

			eng = bpf_map_lookup_elem(&engines, &k2);
			if (eng && eng->addr == c->engine_addr &&
			    (eng->flags & ENGINE_USABLE)) {
				engine = c->engine & (MAX_ENGINES - 1);
				count(STATS_ENGINE_BASE + engine * STATS_PER_ENGINE +
					      STATS_ENGINE_CONN_HITS,
				      bytes);
			}
		}
	}

	key = slot * MAX_ENGINES + (engine & (MAX_ENGINES - 1));
	eng = bpf_map_lookup_elem(&engines, &key);
	if (!eng || !(eng->flags & ENGINE_USABLE))
		return fail_open(REASON_ENGINE_DOWN, service_id, bytes);

	if (bpf_jiffies64() > ctl->heartbeat_jiffies + ctl->grace_jiffies)
		return fail_open(REASON_HEARTBEAT, service_id, bytes);

	__u32 tot_len = bpf_ntohs(ip->tot_len);

	if (eng->method == METHOD_GRE && eng->mtu &&
	    tot_len + GRE_OVERHEAD > eng->mtu) {
		if (ip->frag_off & bpf_htons(IP_DF))
			return fail_open(REASON_TOO_BIG_DF, service_id, bytes);
		return fail_open(REASON_TOO_BIG, service_id, bytes);
	}

	if (syn) {
		struct redirector_conn c = { .engine_addr = eng->addr,
					     .engine = engine & (MAX_ENGINES - 1) };

		bpf_map_update_elem(&conns, &flow, &c, BPF_ANY);
	}

	__u32 reason;

	if (eng->method == METHOD_L2) {
		__u8 *eth = data;

		__builtin_memcpy(eth, eng->dst_mac, 6);
		__builtin_memcpy(eth + 6, eng->src_mac, 6);
		reason = REASON_REDIRECT_L2;
	} else {
		/* Header fields read before the frame moves. */
		__u8 tos = ip->tos;
		__u16 df = ip->frag_off & bpf_htons(IP_DF);
		struct ipv4 outer = {
			.ver_ihl = 0x45,
			.tos = tos,
			.tot_len = bpf_htons(tot_len + GRE_OVERHEAD),
			.id = 0,
			.frag_off = df,
			.ttl = 64,
			.protocol = IPPROTO_GRE,
			.check = 0,
			.saddr = eng->router_addr,
			.daddr = eng->addr,
		};
		__u8 macs[12];
#ifdef REDIRECTOR_BENCH
		__u8 saved_eth[14];

		if ((void *)((__u8 *)data + 14) > data_end)
			return XDP_ABORTED;
		__builtin_memcpy(saved_eth, data, 14);
#endif
		__u8 rh0 = (svc->options & SERVICE_DYNAMIC ? RH_DYNAMIC : 0) |
			   (alternate ? RH_ALTERNATE : 0);

		outer.check = ipv4_checksum(&outer);
		__builtin_memcpy(macs, eng->dst_mac, 6);
		__builtin_memcpy(macs + 6, eng->src_mac, 6);
		if (bpf_xdp_adjust_head(ctx, (int)l3_off - ENCAP_LEN))
			return fail_open(REASON_ADJUST_FAILED, service_id, bytes);
		data = (void *)(long)ctx->data;
		data_end = (void *)(long)ctx->data_end;
		if (data + ENCAP_LEN > data_end)
			return XDP_ABORTED;
		__u8 *p = data;

		__builtin_memcpy(p, macs, 12);
		p[12] = 0x08;
		p[13] = 0x00;
		__builtin_memcpy(p + 14, &outer, 20);
		p[34] = 0;
		p[35] = 0;
		p[36] = 0x88;
		p[37] = 0x3e;
		p[38] = rh0;
		p[39] = service_id;
		p[40] = alternate ? secondary : 0;
		p[41] = primary;
		reason = REASON_REDIRECT_GRE;
#ifdef REDIRECTOR_BENCH
		/* Bench-only build (redirect_bench.c): put the frame back as it came,
		 * so that BPF_PROG_TEST_RUN's repeat runs the whole redirect path on
		 * the same input every time instead of on its own GRE output. */
		if (l3_off == 14) {
			__builtin_memcpy(p + GRE_OVERHEAD, saved_eth, 14);
			if (bpf_xdp_adjust_head(ctx, GRE_OVERHEAD))
				return XDP_ABORTED;
		}
#endif
	}

	count(STATS_SERVICE_BASE + (__u32)service_id * STATS_PER_SERVICE +
		      STATS_SERVICE_REDIRECTED,
	      bytes);
	count(STATS_ENGINE_BASE + (engine & (MAX_ENGINES - 1)) * STATS_PER_ENGINE +
		      STATS_ENGINE_REDIRECTED,
	      bytes);
	count(reason, bytes);
	if (eng->ifindex == 0)
		return XDP_TX;
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
