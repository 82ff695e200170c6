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
	__uint(max_entries, SLOTS);
	__type(key, __u32);
	__type(value, struct redirector_slot);
} slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SLOTS * MAX_ENGINES);
	__type(key, struct redirector_engine_key);
	__type(value, __u32);
} engine_addrs SEC(".maps");

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

/* One value per CPU holding every counter: a packet looks it up once and its
 * counts are plain adds (a lookup per count cost a spill and a reload each). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct redirector_stats);
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

/* Key 0 of the one-entry maps, in read-only data rather than on the stack: the
 * inlined lookup then reads a cached constant instead of waiting for a store
 * it has just made to be forwarded. */
static const __u32 key_zero = 0;

/* This CPU's counters; never NULL in practice (one entry, key 0). */
static __always_inline struct redirector_stats *cpu_stats(void)
{
	return bpf_map_lookup_elem(&stats, &key_zero);
}

static __always_inline void count(struct redirector_stats *st, __u32 index, __u64 bytes)
{
	if (index < STATS_ENTRIES) {
		st->c[index].packets += 1;
		st->c[index].bytes += bytes;
	}
}

static __always_inline int done(struct redirector_stats *st, int verdict, __u32 reason,
				__u64 bytes)
{
	count(st, reason, bytes);
	return verdict;
}

/*
 * classify()'s answer for a packet to redirect. Any other answer is the reason
 * the packet was counted under; it goes on unredirected, whatever the hook.
 */
#define CLASSIFY_REDIRECT (-1)

static __always_inline int counted(struct redirector_stats *st, __u32 reason, __u64 bytes)
{
	count(st, reason, bytes);
	return reason;
}

/* The service's failed-open counter, besides the reason. */
static __always_inline int counted_fail_open(struct redirector_stats *st, __u32 reason,
					     __u8 service_id,
					     __u64 bytes)
{
	count(st, STATS_SERVICE_BASE + (__u32)service_id * STATS_PER_SERVICE +
		      STATS_SERVICE_FAILED_OPEN,
	      bytes);
	return counted(st, reason, bytes);
}

/* A service's packet that its lists keep from redirection. */
static __always_inline int counted_skip(struct redirector_stats *st, __u32 reason,
					__u8 service_id, __u64 bytes)
{
	count(st, STATS_SERVICE_BASE + (__u32)service_id * STATS_PER_SERVICE +
		      STATS_SERVICE_SKIPPED,
	      bytes);
	return counted(st, reason, bytes);
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
static __attribute__((noinline)) int clamp_synack(__u8 *th, void *data_end,
						  const struct redirector_slot *t)
{
	const struct redirector_service *svc;
	__u32 pref = NO_SERVICE_PREF, doff, off = 20;
	__u16 clamp;

	if (!t->header.mss_clamp)
		return 0;
	clamp = t->header.mss_clamp;
	pref = t->ports[((__u32)th[0] << 8) | th[1]].dst_pref;
	if (t->header.any_pref[0] > pref)
		pref = t->header.any_pref[0];
	if (pref == NO_SERVICE_PREF || pref > MAX_SERVICES)
		return 0;
	svc = &t->services[(MAX_SERVICES - pref) & (MAX_SERVICES - 1)];
	if (!(svc->options & SERVICE_MSS_CLAMP))
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
static __always_inline void clamp_if_synack(struct redirector_stats *st, struct ipv4 *ip, __u32 ihl_len, void *data_end,
					    const struct redirector_slot *t, __u32 frag,
					    __u64 bytes)
{
	__u8 *th = (void *)ip + ihl_len;

	if (ip->protocol == IPPROTO_TCP && !frag && (void *)(th + 20) <= data_end &&
	    (th[13] & (TCP_SYN | TCP_ACK)) == (TCP_SYN | TCP_ACK) &&
	    clamp_synack(th, data_end, t))
		count(st, STATS_MSS_CLAMPED, bytes);
}


/* What classify() chose for a packet to redirect. Only registers' worth: its
 * address never reaches a helper, so the compiler keeps it out of memory (the
 * flow key, which helpers read, is apart). */
struct redirect_decision {
	const struct redirector_service *svc;
	const struct redirector_engine *eng;
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

/* The connection table's key for a packet's flow. */
static __always_inline void flow_key(struct redirector_flow *flow, const struct ipv4 *ip,
				     __u32 sport, __u32 dport)
{
	*flow = (struct redirector_flow){
		.saddr = ip->saddr,
		.daddr = ip->daddr,
		.sport = bpf_htons(sport),
		.dport = bpf_htons(dport),
		.protocol = IPPROTO_TCP,
	};
}

/*
 * From the transport header on: ports, service, the engines' own connections,
 * the service's lists, bucket or mask value, connection table, engine and
 * heartbeat. Counts and returns the reason of a packet that is not to be
 * redirected, or fills d and, for a SYN, flow (the connection table's key) and
 * returns CLASSIFY_REDIRECT. ip: a complete, unfragmented IPv4 header of
 * ihl_len bytes. t: slots[slot]. clamp (a constant): MSS-clamp SYN-ACKs
 * first, as the ingress hook does.
 */
static __always_inline int classify(struct redirector_stats *st, struct ipv4 *ip, __u32 ihl_len, void *data_end,
				    const struct redirector_slot *t, __u32 slot,
				    const struct redirector_control *ctl, __u64 bytes, int clamp,
				    struct redirect_decision *d, struct redirector_flow *flow)
{
	/* Ports, and the TCP flags the connection table needs. */
	__u32 proto_i, sport, dport, tcp_flags = 0;
	void *l4 = (void *)ip + ihl_len;

	if (ip->protocol == IPPROTO_TCP) {
		if (l4 + 20 > data_end)
			return counted(st, REASON_MALFORMED, bytes);
		tcp_flags = ((__u8 *)l4)[13];
		proto_i = 0;
	} else if (ip->protocol == IPPROTO_UDP) {
		if (l4 + 8 > data_end)
			return counted(st, REASON_MALFORMED, bytes);
		proto_i = 1;
	} else {
		return counted(st, REASON_NO_SERVICE, bytes);
	}
	if (clamp && proto_i == 0 &&
	    (tcp_flags & (TCP_SYN | TCP_ACK)) == (TCP_SYN | TCP_ACK) &&
	    clamp_synack(l4, data_end, t))
		count(st, STATS_MSS_CLAMPED, bytes);
	sport = bpf_ntohs(((__u16 *)l4)[0]);
	dport = bpf_ntohs(((__u16 *)l4)[1]);

	/* The best-priority service: a maximum of three preferences. */
	const struct redirector_port *ports = &t->ports[proto_i * PORTS];
	__u32 pref = ports[dport].dst_pref, rank;

	if ((t->header.flags & TABLE_SRC_PORTS) && ports[sport].src_pref > pref)
		pref = ports[sport].src_pref;
	if (t->header.any_pref[proto_i] > pref)
		pref = t->header.any_pref[proto_i];
	if (pref == NO_SERVICE_PREF || pref > MAX_SERVICES)
		return counted(st, REASON_NO_SERVICE, bytes);
	rank = (MAX_SERVICES - pref) & (MAX_SERVICES - 1);

	/* The engines' own connections are never redirected. */
	__u32 saddr = bpf_ntohl(ip->saddr), daddr = bpf_ntohl(ip->daddr);

	if ((t->engine_filter[(saddr & 0xffff) >> 6] >> (saddr & 63)) & 1) {
		struct redirector_engine_key ek = { .slot = slot, .addr = ip->saddr };

		if (bpf_map_lookup_elem(&engine_addrs, &ek))
			return counted(st, REASON_ENGINE_SOURCE, bytes);
	}

	const struct redirector_service *svc = &t->services[rank];
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
			return counted_skip(st, REASON_LIST_SKIP, service_id, bytes);
		if ((svc->options & SERVICE_REDIRECT_LIST) && !(kinds & PREFIX_REDIRECT))
			return counted_skip(st, REASON_NOT_LISTED, service_id, bytes);
	}
	const struct redirector_bucket *buckets = &t->buckets[rank * BUCKETS];
	__u32 primary = 0, secondary = 0, alternate = 0;
	struct redirector_bucket b;

	if (svc->options & SERVICE_MASK)
		primary = mask_index(svc, saddr, daddr, sport, dport) & (BUCKETS - 1);
	else
		primary = fold(hash_key(svc->flags, saddr, daddr, sport, dport));
	b = buckets[primary];
	if (!(b.flags & BUCKET_ASSIGNED))
		return counted_fail_open(st, REASON_UNASSIGNED, service_id, bytes);
	__u32 engine = b.engine, sticky = b.flags & BUCKET_STICKY;

	if ((b.flags & BUCKET_ALTERNATE) && !(svc->options & SERVICE_MASK)) {
		secondary = fold(hash_key(svc->flags >> 8, saddr, daddr, sport, dport));
		alternate = 1;
		b = buckets[secondary];
		if (!(b.flags & BUCKET_ASSIGNED))
			return counted_fail_open(st, REASON_UNASSIGNED, service_id, bytes);
		engine = b.engine;
	}

	/* The connection table: a SYN records its engine; later segments of a
	 * flow in a bucket whose owner changed follow the recorded one. */
	__u32 syn = proto_i == 0 && (tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN;
	const struct redirector_engine *eng;

	if (syn) {
		flow_key(flow, ip, sport, dport);
	} else if (proto_i == 0 && sticky) {
		flow_key(flow, ip, sport, dport);
		struct redirector_conn *c = bpf_map_lookup_elem(&conns, flow);

		if (c) {
			eng = &t->engines[c->engine & (MAX_ENGINES - 1)];
			if (eng->addr == c->engine_addr && (eng->flags & ENGINE_USABLE)) {
				engine = c->engine & (MAX_ENGINES - 1);
				count(st, STATS_ENGINE_BASE + engine * STATS_PER_ENGINE +
					      STATS_ENGINE_CONN_HITS,
				      bytes);
			}
		}
	}

	eng = &t->engines[engine & (MAX_ENGINES - 1)];
	if (!(eng->flags & ENGINE_USABLE))
		return counted_fail_open(st, REASON_ENGINE_DOWN, service_id, bytes);

	if (bpf_jiffies64() > ctl->heartbeat_jiffies + ctl->grace_jiffies)
		return counted_fail_open(st, REASON_HEARTBEAT, service_id, bytes);

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

/*
 * Header writes in words, not bytes. Packet and map-value accesses need no
 * alignment where the kernel has efficient unaligned access (x86-64, arm64),
 * and clang lowers a __builtin_memcpy to or from packet bytes into one load
 * and one store per byte: for the 42 bytes of a GRE encapsulation that was
 * about 130 instructions, a third of the redirect path.
 */
static __always_inline void put16(__u8 *p, __u16 v)
{
	*(__u16 *)p = v;
}

static __always_inline void put32(__u8 *p, __u32 v)
{
	*(__u32 *)p = v;
}

static __always_inline void put64(__u8 *p, __u64 v)
{
	*(__u64 *)p = v;
}

/* The engine's next-hop MACs (destination, then source: 12 bytes) at p. */
static __always_inline void put_engine_macs(__u8 *p, const struct redirector_engine *eng)
{
	/* dst_mac and src_mac are adjacent, at offsets 8 and 16 of the value. */
	put64(p, *(const __u64 *)eng->dst_mac);
	put32(p + 8, *(const __u32 *)(eng->dst_mac + 8));
}

/* An 802.1Q tag (TPID, then the engine's tag control) at bytes 12-15, after
 * the MACs. */
static __always_inline void put_vlan_tag(__u8 *p, __u16 tci)
{
	put16(p + 12, bpf_htons(ETH_P_8021Q_));
	put16(p + 14, tci);
}

/*
 * Bytes 12-41 of a GRE-redirected frame: EtherType IPv4, the outer IPv4 header
 * (router -> engine, protocol GRE, the inner packet's TOS and DF, TTL 64), GRE
 * with protocol 0x883E and the redirect header. tot_len: the inner packet's;
 * df: IP_DF or 0. The header checksum is summed over the words as stored,
 * which gives the right sum in either byte order (RFC 1071).
 */
static __always_inline void put_gre_headers(__u8 *p, const struct redirect_decision *d,
					    __u32 tot_len, __u8 tos, __u16 df)
{
	__u32 ethertype_tos = bpf_htonl(0x08004500 | tos);
	__u32 len_id = bpf_htonl((tot_len + GRE_OVERHEAD) << 16);
	__u32 frag_ttl_proto = bpf_htonl(((__u32)df << 16) | (64 << 8) | IPPROTO_GRE);
	__u32 saddr = d->eng->router_addr, daddr = d->eng->addr;
	__u32 sum = (ethertype_tos >> 16) + (len_id & 0xffff) + (frag_ttl_proto & 0xffff) +
		    (frag_ttl_proto >> 16) + (saddr & 0xffff) + (saddr >> 16) +
		    (daddr & 0xffff) + (daddr >> 16);
	__u32 flags = (d->svc->options & SERVICE_DYNAMIC ? RH_DYNAMIC : 0) |
		      (d->alternate ? RH_ALTERNATE : 0);

	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	put32(p + 12, ethertype_tos);
	put32(p + 16, len_id);
	put32(p + 20, frag_ttl_proto);
	put16(p + 24, ~sum & 0xffff);
	put32(p + 26, saddr);
	put32(p + 30, daddr);
	put32(p + 34, bpf_htonl(0x883e));
	put32(p + 38, bpf_htonl((flags << 24) | ((__u32)d->service_id << 16) |
				((d->alternate ? d->secondary : 0) << 8) | d->primary));
}

/* The service's and the engine's redirected counters, and the reason. */
static __always_inline void count_redirected(struct redirector_stats *st,
					     const struct redirect_decision *d,
					     __u32 reason, __u64 bytes)
{
	count(st, STATS_SERVICE_BASE + (__u32)d->service_id * STATS_PER_SERVICE +
		      STATS_SERVICE_REDIRECTED,
	      bytes);
	count(st, STATS_ENGINE_BASE + d->engine * STATS_PER_ENGINE + STATS_ENGINE_REDIRECTED,
	      bytes);
	count(st, reason, bytes);
}

#endif /* REDIRECTOR_CLASSIFY_H */
