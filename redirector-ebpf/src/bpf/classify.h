/* SPDX-License-Identifier: MIT OR GPL-2.0-only */
/*
 * The classification every redirect hook shares: the maps, the counters, the
 * draft's hash and mask arithmetic, and classify(), which takes an IPv4 packet
 * from its transport header to the engine it goes to (or the reason it does
 * not). The XDP ingress program and the tc egress program ("redirect out")
 * both include it, in one object, so that they read the same maps; each does
 * its own hook-specific steps around it (packet return, interface flags, MSS
 * clamping and ICMP at ingress) and its own encapsulation.
 *
 * The Rust model in redirector-ebpf/src/model.rs (Dataplane::classify) is the
 * specification of classify() as of the rest.
 */
#ifndef REDIRECTOR_CLASSIFY_H
#define REDIRECTOR_CLASSIFY_H

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

/*
 * classify()'s answer for a packet to redirect. Any other answer is the reason
 * the packet was counted under; it goes on unredirected, whatever the hook.
 */
#define CLASSIFY_REDIRECT (-1)

static __always_inline int counted(__u32 reason, __u64 bytes)
{
	count(reason, bytes);
	return reason;
}

/* The service's failed-open counter, besides the reason. */
static __always_inline int counted_fail_open(__u32 reason, __u8 service_id,
					     __u64 bytes)
{
	count(STATS_SERVICE_BASE + (__u32)service_id * STATS_PER_SERVICE +
		      STATS_SERVICE_FAILED_OPEN,
	      bytes);
	return counted(reason, bytes);
}

/* A service's packet that its lists keep from redirection. */
static __always_inline int counted_skip(__u32 reason, __u8 service_id, __u64 bytes)
{
	count(STATS_SERVICE_BASE + (__u32)service_id * STATS_PER_SERVICE +
		      STATS_SERVICE_SKIPPED,
	      bytes);
	return counted(reason, bytes);
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
 * checked. Returns whether it changed the segment. A subprogram, not inlined:
 * SYN-ACKs are rare, and its option walk inlined three times would crowd the
 * common path's registers (measured: a few ns per packet).
 */
static __attribute__((noinline)) int clamp_synack(__u8 *th, void *data_end, __u32 slot)
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

/* clamp_synack() for a packet whose TCP header is not checked yet. */
static __always_inline void clamp_if_synack(struct ipv4 *ip, __u32 ihl_len, void *data_end,
					    __u32 slot, __u32 frag, __u64 bytes)
{
	__u8 *th = (void *)ip + ihl_len;

	if (ip->protocol == IPPROTO_TCP && !frag && (void *)(th + 20) <= data_end &&
	    (th[13] & (TCP_SYN | TCP_ACK)) == (TCP_SYN | TCP_ACK) &&
	    clamp_synack(th, data_end, slot))
		count(STATS_MSS_CLAMPED, bytes);
}


/* What classify() chose for a packet to redirect. Only registers' worth: its
 * address never reaches a helper, so the compiler keeps it out of memory (the
 * flow key, which helpers read, is apart). */
struct redirect_decision {
	struct redirector_service *svc;
	struct redirector_engine *eng;
	/* Engine index, below MAX_ENGINES. */
	__u32 engine;
	/* Primary and secondary bucket (or mask value), redirect header order. */
	__u32 primary;
	__u32 secondary;
	__u32 alternate;
	/* A TCP SYN without ACK: remember its engine. */
	__u32 syn;
	__u8 service_id;
};

/*
 * From the transport header on: ports, service, the engines' own connections,
 * the service's lists, bucket or mask value, connection table, engine and
 * heartbeat. Counts and returns the reason of a packet that is not to be
 * redirected, or fills d and flow (the connection table's key) and returns
 * CLASSIFY_REDIRECT. ip: a complete, unfragmented IPv4 header of ihl_len bytes.
 * clamp (a constant): MSS-clamp SYN-ACKs first, as the ingress hook does.
 */
static __always_inline int classify(struct ipv4 *ip, __u32 ihl_len, void *data_end,
				    __u32 slot, const struct redirector_control *ctl,
				    __u64 bytes, int clamp, struct redirect_decision *d,
				    struct redirector_flow *flow)
{
	/* Ports, and the TCP flags the connection table needs. */
	__u32 proto_i, sport, dport, tcp_flags = 0;
	void *l4 = (void *)ip + ihl_len;
	__u32 key;

	if (ip->protocol == IPPROTO_TCP) {
		if (l4 + 20 > data_end)
			return counted(REASON_MALFORMED, bytes);
		tcp_flags = ((__u8 *)l4)[13];
		proto_i = 0;
	} else if (ip->protocol == IPPROTO_UDP) {
		if (l4 + 8 > data_end)
			return counted(REASON_MALFORMED, bytes);
		proto_i = 1;
	} else {
		return counted(REASON_NO_SERVICE, bytes);
	}
	if (clamp && proto_i == 0 &&
	    (tcp_flags & (TCP_SYN | TCP_ACK)) == (TCP_SYN | TCP_ACK) &&
	    clamp_synack(l4, data_end, slot))
		count(STATS_MSS_CLAMPED, bytes);
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
		return counted(REASON_NO_SERVICE, bytes);
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
				return counted(REASON_ENGINE_SOURCE, bytes);
		}
	}

	key = slot * MAX_SERVICES + rank;
	struct redirector_service *svc = bpf_map_lookup_elem(&services, &key);

	if (!svc)
		return counted(REASON_NO_SERVICE, bytes);
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
			return counted_skip(REASON_LIST_SKIP, service_id, bytes);
		if ((svc->options & SERVICE_REDIRECT_LIST) && !(kinds & PREFIX_REDIRECT))
			return counted_skip(REASON_NOT_LISTED, service_id, bytes);
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
		return counted_fail_open(REASON_UNASSIGNED, service_id, bytes);
	__u32 engine = b->engine, sticky = b->flags & BUCKET_STICKY;

	if ((b->flags & BUCKET_ALTERNATE) && !(svc->options & SERVICE_MASK)) {
		secondary = fold(hash_key(svc->flags >> 8, saddr, daddr, sport, dport));
		alternate = 1;
		key = svc_base + secondary;
		b = bpf_map_lookup_elem(&buckets, &key);
		if (!b || !(b->flags & BUCKET_ASSIGNED))
			return counted_fail_open(REASON_UNASSIGNED, service_id, bytes);
		engine = b->engine;
	}

	/* The connection table: a SYN records its engine; later segments of a
	 * flow in a bucket whose owner changed follow the recorded one. */
	*flow = (struct redirector_flow){
		.saddr = ip->saddr,
		.daddr = ip->daddr,
		.sport = bpf_htons(sport),
		.dport = bpf_htons(dport),
		.protocol = IPPROTO_TCP,
	};
	__u32 syn = proto_i == 0 && (tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN;
	struct redirector_engine *eng;

	if (proto_i == 0 && !syn && sticky) {
		struct redirector_conn *c = bpf_map_lookup_elem(&conns, flow);

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
		return counted_fail_open(REASON_ENGINE_DOWN, service_id, bytes);

	if (bpf_jiffies64() > ctl->heartbeat_jiffies + ctl->grace_jiffies)
		return counted_fail_open(REASON_HEARTBEAT, service_id, bytes);


	d->svc = svc;
	d->eng = eng;
	d->engine = engine & (MAX_ENGINES - 1);
	d->primary = primary;
	d->secondary = secondary;
	d->alternate = alternate;
	d->syn = syn;
	d->service_id = service_id;
	return CLASSIFY_REDIRECT;
}

/* A SYN records the engine chosen for its flow. */
static __always_inline void remember_syn(const struct redirect_decision *d,
					 const struct redirector_flow *flow)
{
	if (d->syn) {
		struct redirector_conn c = { .engine_addr = d->eng->addr,
					     .engine = d->engine };

		bpf_map_update_elem(&conns, flow, &c, BPF_ANY);
	}
}

/* The outer IPv4 header of a GRE-redirected packet of tot_len bytes. */
static __always_inline void gre_outer(struct ipv4 *outer, const struct redirect_decision *d,
				      __u32 tot_len, __u8 tos, __u16 df)
{
	outer->ver_ihl = 0x45;
	outer->tos = tos;
	outer->tot_len = bpf_htons(tot_len + GRE_OVERHEAD);
	outer->id = 0;
	outer->frag_off = df;
	outer->ttl = 64;
	outer->protocol = IPPROTO_GRE;
	outer->check = 0;
	outer->saddr = d->eng->router_addr;
	outer->daddr = d->eng->addr;
	outer->check = ipv4_checksum(outer);
}

/* GRE (protocol 0x883E) and the redirect header, 8 bytes at p. */
static __always_inline void gre_headers(__u8 *p, const struct redirect_decision *d)
{
	p[0] = 0;
	p[1] = 0;
	p[2] = 0x88;
	p[3] = 0x3e;
	p[4] = (d->svc->options & SERVICE_DYNAMIC ? RH_DYNAMIC : 0) |
	       (d->alternate ? RH_ALTERNATE : 0);
	p[5] = d->service_id;
	p[6] = d->alternate ? d->secondary : 0;
	p[7] = d->primary;
}

/* The service's and the engine's redirected counters, and the reason. */
static __always_inline void count_redirected(const struct redirect_decision *d,
					     __u32 reason, __u64 bytes)
{
	count(STATS_SERVICE_BASE + (__u32)d->service_id * STATS_PER_SERVICE +
		      STATS_SERVICE_REDIRECTED,
	      bytes);
	count(STATS_ENGINE_BASE + d->engine * STATS_PER_ENGINE + STATS_ENGINE_REDIRECTED,
	      bytes);
	count(reason, bytes);
}

#endif /* REDIRECTOR_CLASSIFY_H */
