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
#define IPPROTO_ICMP_ 1
#define ICMP_DEST_UNREACH_ 3
#define ICMP_FRAG_NEEDED_ 4
/* Precedence "internetwork control", as hosts send ICMP errors. */
#define ICMP_TOS 0xc0
/* IP bytes an ICMP answer needs in the frame (see frag_needed). */
#define ICMP_QUOTE_MIN 68
/* Bytes the ICMP checksum reads: header, the longest IP header, 8 bytes. */
#define ICMP_SUM_WINDOW 76
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
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SLOTS * FILTER_WORDS);
	__type(key, __u32);
	__type(value, __u64);
} mac_filter SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SLOTS * MAX_ENGINES);
	__type(key, struct redirector_mac_key);
	__type(value, __u32);
} engine_macs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, SLOTS * MAX_PREFIXES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct redirector_prefix_key);
	__type(value, __u32);
} prefixes SEC(".maps");

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

/* A service's packet that its lists keep from redirection. */
static __always_inline int skipped(__u32 reason, __u8 service_id, __u64 bytes)
{
	count(STATS_SERVICE_BASE + (__u32)service_id * STATS_PER_SERVICE +
		      STATS_SERVICE_SKIPPED,
	      bytes);
	return done(XDP_PASS, reason, bytes);
}

/* RFC 1624 eqn. 3: the checksum after one 16-bit word changed from old to new. */
static __always_inline __u16 checksum_replace(__u16 check, __u16 old, __u16 new)
{
	__u32 sum = (~check & 0xffff) + (~old & 0xffff) + new;

	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum & 0xffff;
}

/*
 * A SYN-ACK whose source port a GRE-redirected service serves (the best of the
 * services matching it as a destination port or any port): lowers its MSS
 * option to the slot's clamp, so that the client's segments still fit the
 * engine's path once GRE adds 28 bytes. th: the TCP header, 20 bytes of it
 * checked. Returns whether it changed the segment.
 */
static __always_inline int clamp_synack(__u8 *th, void *data_end, __u32 slot)
{
	struct redirector_table *tab = bpf_map_lookup_elem(&tables, &slot);
	struct redirector_service *svc;
	struct redirector_port *pe;
	__u32 pref = NO_SERVICE_PREF, key, doff, off = 20;
	__u16 clamp;

	if (!tab || !tab->mss_clamp)
		return 0;
	clamp = tab->mss_clamp;
	key = slot * PORT_PROTOCOLS * PORTS + (((__u32)th[0] << 8) | th[1]);
	pe = bpf_map_lookup_elem(&ports, &key);
	if (pe)
		pref = pe->dst_pref;
	if (tab->any_pref[0] > pref)
		pref = tab->any_pref[0];
	if (pref == NO_SERVICE_PREF || pref > MAX_SERVICES)
		return 0;
	key = slot * MAX_SERVICES + (MAX_SERVICES - pref);
	svc = bpf_map_lookup_elem(&services, &key);
	if (!svc || !(svc->options & SERVICE_MSS_CLAMP))
		return 0;
	doff = (th[12] >> 4) * 4;
	if (doff <= 20 || (void *)(th + doff) > data_end)
		return 0;

	/* No step counter: off grows by at least one byte per step and stays
	 * below doff <= 60, which bounds the loop for the verifier, and a counter
	 * would keep it from pruning the states of equal offsets. */
	while (off < doff) {
		__u8 *p = th + (off & 63);
		__u32 len;

		if ((void *)(p + 1) > data_end)
			return 0;
		if (p[0] == 0)
			return 0;
		if (p[0] == 1) {
			off += 1;
			continue;
		}
		if (off + 2 > doff || (void *)(p + 2) > data_end)
			return 0;
		len = p[1];
		if (len < 2)
			return 0;
		if (p[0] == 2 && len == 4) {
			__u16 mss, old, new;

			if (off + 4 > doff || (void *)(p + 4) > data_end)
				return 0;
			mss = ((__u16)p[2] << 8) | p[3];
			if (mss <= clamp)
				return 0;
			p[2] = clamp >> 8;
			p[3] = clamp & 0xff;
			/* At an odd offset the field straddles two checksum words,
			 * its bytes swapped in the sum. */
			if (off & 1) {
				old = (mss >> 8) | (mss << 8);
				new = (clamp >> 8) | (clamp << 8);
			} else {
				old = mss;
				new = clamp;
			}
			__u16 check = ((__u16)th[16] << 8) | th[17];

			check = checksum_replace(check, old, new);
			th[16] = check >> 8;
			th[17] = check & 0xff;
			return 1;
		}
		off += len;
	}
	return 0;
}

/*
 * ICMP fragmentation needed (type 3 code 4) for a DF packet too big for the
 * engine's path, sent back out of the ingress interface: MACs swapped, VLAN
 * tags kept, from the router's address on the engine's side, announcing the
 * engine's MTU less GRE's 28 bytes, quoting the IP header and 8 bytes of
 * payload. The frame grows by 28 bytes in front (new IP and ICMP headers, the
 * quote stays where it is) and is cut after the quote. The caller checked
 * that the IP packet holds at least ICMP_QUOTE_MIN bytes.
 */
static __always_inline int frag_needed(struct xdp_md *ctx, __u32 l3_off,
				       __u32 ihl_len, __u32 router_addr,
				       __u16 mtu, __u64 bytes)
{
	void *data, *data_end;
	__u8 *eth, *icmp;
	struct ipv4 *ip, *orig;
	__u32 sum = 0, quote = ihl_len + 8;

	if (bpf_xdp_adjust_head(ctx, -GRE_OVERHEAD))
		return done(XDP_PASS, REASON_ADJUST_FAILED, bytes);
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
	ip->saddr = router_addr;
	ip->check = ipv4_checksum(ip);

	icmp[0] = ICMP_DEST_UNREACH_;
	icmp[1] = ICMP_FRAG_NEEDED_;
	icmp[2] = 0;
	icmp[3] = 0;
	icmp[4] = 0;
	icmp[5] = 0;
	icmp[6] = (mtu - GRE_OVERHEAD) >> 8;
	icmp[7] = (mtu - GRE_OVERHEAD) & 0xff;
#pragma unroll
	for (int i = 0; i < ICMP_SUM_WINDOW / 2; i++) {
		if (i * 2 < 8 + quote)
			sum += ((__u16 *)icmp)[i];
	}
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	((__u16 *)icmp)[1] = ~sum & 0xffff;

	if (bpf_xdp_adjust_tail(ctx, (int)(l3_off + 28 + quote) -
					     (int)(data_end - data)))
		return XDP_ABORTED;
	return done(XDP_TX, REASON_TOO_BIG_DF, bytes);
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

	/* SYN-ACKs toward the clients of GRE services, wherever they come from
	 * (the engines' arrive on engine-facing interfaces): MSS clamp. */
	if (ip->protocol == IPPROTO_TCP && !frag) {
		__u8 *th = (void *)ip + ihl_len;

		if ((void *)(th + 20) <= data_end &&
		    (th[13] & (TCP_SYN | TCP_ACK)) == (TCP_SYN | TCP_ACK) &&
		    clamp_synack(th, data_end, slot))
			count(STATS_MSS_CLAMPED, bytes);
	}

	/* L2 return: from the MAC of an engine that returns at L2, and not from
	 * its own address (its own connections are told apart later). Only when
	 * the slot has such engines, then behind the MAC filter. */
	if (ctl->flags & (CONTROL_L2_RETURN << slot)) {
		__u8 *eth = data;
		__u32 low = ((__u32)eth[10] << 8) | eth[11];
		__u32 word = slot * FILTER_WORDS + (low >> 6);
		__u64 *w = bpf_map_lookup_elem(&mac_filter, &word);

		if (w && (*w >> (low & 63)) & 1) {
			struct redirector_mac_key mk = { .slot = slot };
			__u32 *idx;

			__builtin_memcpy(mk.mac, eth + 6, 6);
			idx = bpf_map_lookup_elem(&engine_macs, &mk);
			if (idx) {
				__u32 e = *idx & (MAX_ENGINES - 1);
				__u32 k2 = slot * MAX_ENGINES + e;
				struct redirector_engine *eng =
					bpf_map_lookup_elem(&engines, &k2);

				if (eng && eng->addr != ip->saddr) {
					count(STATS_ENGINE_BASE + e * STATS_PER_ENGINE +
						      STATS_ENGINE_RETURNED,
					      bytes);
					return done(XDP_PASS, REASON_RETURN_L2, bytes);
				}
			}
		}
	}

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

	/* The operator's lists, only for services that have them: one trie
	 * lookup per address, whose value covers every listed prefix around it. */
	if (svc->options & SERVICE_LISTS) {
		struct redirector_prefix_key pk = {
			.prefixlen = PREFIX_KEY_BITS + 32,
			.slot = slot,
			.rank = rank,
			.addr = ip->daddr,
		};
		__u32 *v = bpf_map_lookup_elem(&prefixes, &pk);
		__u32 kinds = v ? *v : 0;

		if (!(kinds & PREFIX_SKIP)) {
			pk.addr = ip->saddr;
			v = bpf_map_lookup_elem(&prefixes, &pk);
			if (v)
				kinds |= *v;
		}
		if (kinds & PREFIX_SKIP)
			return skipped(REASON_LIST_SKIP, service_id, bytes);
		if ((svc->options & SERVICE_REDIRECT_LIST) && !(kinds & PREFIX_REDIRECT))
			return skipped(REASON_NOT_LISTED, service_id, bytes);
	}
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
		if (!(ip->frag_off & bpf_htons(IP_DF)))
			return fail_open(REASON_TOO_BIG, service_id, bytes);
		if ((void *)ip + ICMP_QUOTE_MIN > data_end)
			return fail_open(REASON_TOO_BIG_DF, service_id, bytes);
		return frag_needed(ctx, l3_off, ihl_len, eng->router_addr, eng->mtu,
				   bytes);
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
