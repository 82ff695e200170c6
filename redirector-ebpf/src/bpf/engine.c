// SPDX-License-Identifier: MIT OR GPL-2.0-only
/*
 * The engine's per-packet work on tc (clsact) ingress of the interface that
 * WCCP routers redirect to.
 *
 * A redirected packet arrives either as WCCP GRE (outer IPv4 to our address,
 * GRE protocol 0x883E, the 4-byte redirect header, the client's IPv4 packet)
 * or, with L2 forwarding (ENGINE_L2), as the client's own packet sent to our
 * MAC. For TCP to a service port:
 *
 *   - a socket exists for the flow (established, or a request socket of a
 *     handshake in progress): decapsulate, bpf_sk_assign it, set the mark;
 *   - a SYN: decapsulate, bpf_sk_assign the proxy's listener (found by the
 *     flow's destination address and the service's proxy port), set the mark;
 *   - anything else (a flow that began before redirection): packet return,
 *     the packet goes back to the router that sent it.
 *
 * Return rules (LPM on {port, destination prefix}) send matching flows that
 * have no socket back instead of proxying them, optionally with a new inner
 * destination, and may ask for a copy of the frame as received, out of
 * another interface. A flow the proxy already holds is never cut by a rule
 * added later.
 *
 * The original tuple is kept (no NAT): the proxy's accepted socket has the
 * client's destination as its local address, and its replies, sent with
 * IP_TRANSPARENT from that address, go back by plain routing.
 *
 * The mark is what makes the kernel deliver a packet for a foreign address
 * locally: user space adds `ip rule add fwmark MARK lookup TABLE` and
 * `ip route add local 0.0.0.0/0 dev lo table TABLE` (engine_plane.rs).
 *
 * Packet return swaps the outer addresses (we become the source, the router
 * the destination), keeps the redirect header, sets a fresh TTL, swaps the
 * MACs and sends the frame back out of the interface it came in on: the
 * router decapsulates it and forwards the original packet, never redirecting
 * it again. An L2-forwarded packet is returned by swapping the MACs alone.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include "redirector.h"
#include "engine.h"

#define IP_MF 0x2000
#define IP_OFFSET 0x1fff
#define TCP_SYN 0x02
#define TCP_ACK 0x10
#define GRE_PROTO_WCCP 0x883e
#define GRE_LEN 4
#define REDIRECT_LEN 4
/* Redirect header flags a router may set (Wireshark layout): D, A, U. */
#define RH_KNOWN_FLAGS 0x07
#define RETURN_TTL 64
#define PACKET_HOST_ 0
/* Ethernet, outer IPv4 with options, GRE + redirect, inner IPv4 with
 * options, TCP without options: every byte the program reads directly. */
#define HEADERS_MAX (14 + 60 + 8 + 60 + 20)

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct engine_config);
} engine_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u32);
} engine_routers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct engine_port);
} engine_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct engine_rule_key);
	__type(value, struct engine_rule);
} engine_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ENGINE_STATS);
	__type(key, __u32);
	__type(value, struct redirector_counters);
} engine_stats SEC(".maps");

struct eng_ipv4 {
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

struct eng_tcp {
	__u16 sport;
	__u16 dport;
	__u32 seq;
	__u32 ack_seq;
	__u8 doff;
	__u8 flags;
	__u16 window;
	__u16 check;
	__u16 urg;
};

/* What the decision needs of a packet, read before any helper may move the
 * data (every helper that changes the skb invalidates packet pointers). */
struct eng_packet {
	/* Offset of the inner (client's) IPv4 header; 14 for L2. */
	__u32 inner_off;
	/* Offset of its TCP header. */
	__u32 tcp_off;
	/* Bytes to remove to decapsulate: outer IPv4 + GRE + redirect header;
	 * 0 for L2. */
	__u32 decap_len;
	__u32 outer_saddr;
	__u32 outer_daddr;
	__u16 outer_ttl_proto;
	__u8 tcp_flags;
	__u8 l2;
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 eth[12];
};

static __always_inline void count(__u32 index, __u64 bytes)
{
	struct redirector_counters *c = bpf_map_lookup_elem(&engine_stats, &index);

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
 * Packet return: the frame goes back out of the interface it arrived on, to
 * the router that sent it. `rule` may rewrite the inner destination first.
 */
static __always_inline int packet_return(struct __sk_buff *skb,
					 const struct eng_packet *p,
					 const struct engine_rule *rule,
					 __u32 reason, __u64 bytes)
{
	__u8 macs[12];

	if (rule && (rule->flags & RULE_REWRITE)) {
		__u32 old = p->daddr, new = rule->new_daddr;

		if (bpf_l4_csum_replace(skb, p->tcp_off + 16, old, new,
					BPF_F_PSEUDO_HDR | sizeof(new)) ||
		    bpf_l3_csum_replace(skb, p->inner_off + 10, old, new,
					sizeof(new)) ||
		    bpf_skb_store_bytes(skb, p->inner_off + 16, &new, sizeof(new), 0))
			return done(TC_ACT_SHOT, ER_REDIRECT_FAILED, bytes);
		count(EC_REWRITTEN, bytes);
	}
	if (!p->l2) {
		__u32 addrs[2] = { p->outer_daddr, p->outer_saddr };
		__u8 ttl_proto_bytes[2] = { RETURN_TTL, IPPROTO_GRE };
		__u16 ttl_proto;

		__builtin_memcpy(&ttl_proto, ttl_proto_bytes, 2);
		/* Swapping the addresses leaves the checksum as it is; the new
		 * TTL changes one 16-bit word of it. */
		if (bpf_l3_csum_replace(skb, 14 + 10, p->outer_ttl_proto, ttl_proto, 2) ||
		    bpf_skb_store_bytes(skb, 14 + 8, &ttl_proto, 2, 0) ||
		    bpf_skb_store_bytes(skb, 14 + 12, addrs, sizeof(addrs), 0))
			return done(TC_ACT_SHOT, ER_REDIRECT_FAILED, bytes);
	}
	__builtin_memcpy(macs, p->eth + 6, 6);
	__builtin_memcpy(macs + 6, p->eth, 6);
	if (bpf_skb_store_bytes(skb, 0, macs, sizeof(macs), 0))
		return done(TC_ACT_SHOT, ER_REDIRECT_FAILED, bytes);
	count(reason, bytes);
	return bpf_redirect(skb->ifindex, 0);
}

/* Hands the packet to `sk` (a reference this function releases). */
static __always_inline int deliver(struct __sk_buff *skb, struct bpf_sock *sk,
				   const struct eng_packet *p, __u32 mark,
				   __u32 reason, __u64 bytes)
{
	if (p->decap_len &&
	    bpf_skb_adjust_room(skb, -(__s32)p->decap_len, BPF_ADJ_ROOM_MAC, 0)) {
		bpf_sk_release(sk);
		return done(TC_ACT_SHOT, ER_ADJUST_FAILED, bytes);
	}
	if (bpf_sk_assign(skb, sk, 0)) {
		bpf_sk_release(sk);
		return done(TC_ACT_SHOT, ER_ASSIGN_FAILED, bytes);
	}
	bpf_sk_release(sk);
	skb->mark = mark;
	return done(TC_ACT_OK, reason, bytes);
}

/* Whether `saddr` is a router we accept GRE from. */
static __always_inline int known_router(__u32 saddr)
{
	__u32 *flags = bpf_map_lookup_elem(&engine_routers, &saddr);

	return flags && (*flags & ROUTER_KNOWN);
}

SEC("classifier")
int tc_engine(struct __sk_buff *skb)
{
	__u64 bytes = skb->len;
	__u32 zero = 0, len, port_key;
	struct engine_config *cfg;
	struct engine_port *service;
	struct engine_rule rule = {}, *found_rule = 0;
	struct eng_packet p = {};
	struct eng_ipv4 *ip, *inner;
	struct eng_tcp *tcp;
	struct bpf_sock_tuple tuple = {};
	struct bpf_sock *sk;
	void *data, *data_end;
	__u32 ihl, inner_ihl, mark, copy_ifindex;

	cfg = bpf_map_lookup_elem(&engine_config, &zero);
	if (!cfg || !(cfg->flags & ENGINE_ENABLED))
		return done(TC_ACT_OK, ER_DISABLED, bytes);
	if (skb->protocol != bpf_htons(ETH_P_IP))
		return done(TC_ACT_OK, ER_NOT_IPV4, bytes);
	mark = cfg->mark;
	copy_ifindex = cfg->copy_ifindex;

	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	len = data_end - data;
	if (len < HEADERS_MAX && skb->len > len) {
		bpf_skb_pull_data(skb, skb->len < HEADERS_MAX ? skb->len : HEADERS_MAX);
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
	}
	if (data + 14 + sizeof(*ip) > data_end)
		return done(TC_ACT_OK, ER_NOT_REDIRECTED, bytes);
	if (((__u16 *)data)[6] != bpf_htons(ETH_P_IP))
		return done(TC_ACT_OK, ER_NOT_IPV4, bytes);
	__builtin_memcpy(p.eth, data, 12);
	ip = data + 14;
	if ((ip->ver_ihl >> 4) != 4 || (ip->ver_ihl & 0xf) < 5)
		return done(TC_ACT_OK, ER_NOT_REDIRECTED, bytes);

	if (ip->protocol == IPPROTO_GRE && (!cfg->addr || ip->daddr == cfg->addr)) {
		__u8 *gre;

		ihl = (ip->ver_ihl & 0xf) * 4;
		gre = (__u8 *)ip + ihl;
		/* Other GRE tunnels to this host are not ours. */
		if ((void *)(gre + GRE_LEN) <= data_end &&
		    (gre[2] != (GRE_PROTO_WCCP >> 8) || gre[3] != (GRE_PROTO_WCCP & 0xff)))
			return done(TC_ACT_OK, ER_NOT_REDIRECTED, bytes);
		if (!known_router(ip->saddr))
			return done(TC_ACT_SHOT, ER_STRANGER, bytes);
		if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
			return done(TC_ACT_SHOT, ER_TRUNCATED, bytes);
		if ((void *)(gre + GRE_LEN + REDIRECT_LEN + sizeof(*inner)) > data_end)
			return done(TC_ACT_SHOT, ER_TRUNCATED, bytes);
		if (gre[0] != 0 || gre[1] != 0 || (gre[4] & ~RH_KNOWN_FLAGS))
			return done(TC_ACT_SHOT, ER_BAD_HEADER, bytes);
		p.outer_saddr = ip->saddr;
		p.outer_daddr = ip->daddr;
		__builtin_memcpy(&p.outer_ttl_proto, &ip->ttl, 2);
		p.decap_len = ihl + GRE_LEN + REDIRECT_LEN;
		p.inner_off = 14 + p.decap_len;
		inner = (void *)(gre + GRE_LEN + REDIRECT_LEN);
	} else if ((cfg->flags & ENGINE_L2) && ip->protocol == IPPROTO_TCP &&
		   ip->daddr != cfg->addr && skb->pkt_type == PACKET_HOST_) {
		/* Sent to our MAC for a foreign address: redirected by L2
		 * forwarding, if it is for a service (checked below). */
		p.l2 = 1;
		p.inner_off = 14;
		inner = ip;
	} else {
		return done(TC_ACT_OK, ER_NOT_REDIRECTED, bytes);
	}

	/* The client's packet. */
	if ((inner->ver_ihl >> 4) != 4 || (inner->ver_ihl & 0xf) < 5)
		return done(TC_ACT_SHOT, ER_BAD_INNER, bytes);
	inner_ihl = (inner->ver_ihl & 0xf) * 4;
	if (bpf_ntohs(inner->tot_len) < inner_ihl ||
	    bpf_ntohs(inner->tot_len) > skb->len - p.inner_off)
		return done(TC_ACT_SHOT, ER_BAD_INNER, bytes);
	p.saddr = inner->saddr;
	p.daddr = inner->daddr;
	if (inner->protocol != IPPROTO_TCP ||
	    (inner->frag_off & bpf_htons(IP_MF | IP_OFFSET))) {
		if (p.l2)
			return done(TC_ACT_OK, ER_NOT_REDIRECTED, bytes);
		return packet_return(skb, &p, 0, ER_RETURN_NOT_SERVED, bytes);
	}
	tcp = (void *)inner + inner_ihl;
	if ((void *)(tcp + 1) > data_end)
		return done(TC_ACT_SHOT, ER_BAD_INNER, bytes);
	if ((tcp->doff >> 4) < 5 || bpf_ntohs(inner->tot_len) < inner_ihl + (tcp->doff >> 4) * 4)
		return done(TC_ACT_SHOT, ER_BAD_INNER, bytes);
	p.tcp_off = p.inner_off + inner_ihl;
	p.sport = tcp->sport;
	p.dport = tcp->dport;
	p.tcp_flags = tcp->flags;

	port_key = bpf_ntohs(p.dport);
	service = bpf_map_lookup_elem(&engine_ports, &port_key);
	if (!service || !service->proxy_port) {
		if (p.l2)
			return done(TC_ACT_OK, ER_NOT_REDIRECTED, bytes);
		return packet_return(skb, &p, 0, ER_RETURN_NOT_SERVED, bytes);
	}
	if (p.l2)
		count(EC_L2, bytes);

	if (cfg->rules) {
		struct engine_rule_key key = {
			.prefixlen = RULE_PORT_BITS + 32,
			.port = p.dport,
			.addr = p.daddr,
		};
		struct engine_rule *r = bpf_map_lookup_elem(&engine_rules, &key);

		if (!r) {
			key.port = 0;
			r = bpf_map_lookup_elem(&engine_rules, &key);
		}
		if (r) {
			rule = *r;
			found_rule = &rule;
		}
	}
	if (found_rule && (rule.flags & RULE_COPY) && copy_ifindex) {
		/* The frame as it arrived, before any change of ours. */
		if (bpf_clone_redirect(skb, copy_ifindex, 0))
			count(EC_COPY_FAILED, bytes);
		else
			count(EC_COPIED, bytes);
	}

	/* A flow the proxy already has stays with it, whatever the rules say:
	 * returning its packets now would break a live connection. */
	tuple.ipv4.saddr = p.saddr;
	tuple.ipv4.daddr = p.daddr;
	tuple.ipv4.sport = p.sport;
	tuple.ipv4.dport = p.dport;
	sk = bpf_skc_lookup_tcp(skb, &tuple, sizeof(tuple.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (sk) {
		if (sk->state != BPF_TCP_LISTEN)
			return deliver(skb, sk, &p, mark, ER_ESTABLISHED, bytes);
		bpf_sk_release(sk);
	}
	if (found_rule && (rule.flags & RULE_RETURN))
		return packet_return(skb, &p, &rule, ER_RETURN_RULE, bytes);
	if ((p.tcp_flags & (TCP_SYN | TCP_ACK)) != TCP_SYN)
		return packet_return(skb, &p, 0, ER_RETURN_NO_SOCKET, bytes);

	/* A new flow: the proxy's listener, bound to the wildcard address (or
	 * to this destination) with IP_TRANSPARENT. */
	tuple.ipv4.dport = bpf_htons(service->proxy_port);
	sk = bpf_skc_lookup_tcp(skb, &tuple, sizeof(tuple.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (sk) {
		if (sk->state == BPF_TCP_LISTEN)
			return deliver(skb, sk, &p, mark, ER_PROXIED_SYN, bytes);
		bpf_sk_release(sk);
	}
	return packet_return(skb, &p, 0, ER_RETURN_NO_LISTENER, bytes);
}

REDIRECTOR_LICENSE;
