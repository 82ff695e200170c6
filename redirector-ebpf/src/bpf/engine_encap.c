// SPDX-License-Identifier: MIT OR GPL-2.0-only
/*
 * A stand-in WCCP router for the engine's tests and the lab: on tc egress,
 * wraps IPv4 TCP packets to a destination prefix in WCCP GRE (outer IPv4
 * router -> engine, GRE 0x883E, redirect header) so that a real TCP client
 * on the same host is redirected to the engine as a router would do it.
 *
 * Deliberately small: no buckets, no services, no GSO. Packets larger than
 * one segment are not expected (the tests send a few bytes); a GSO packet
 * is passed unencapsulated and counted, never split into broken GRE.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include "redirector.h"

/* encap_config[0]. Rust twin: engine_plane::EncapConfig. */
struct engine_encap_config {
	/* Outer source and destination, network order. */
	__u32 router_addr;
	__u32 engine_addr;
	/* Inner destinations to encapsulate: (daddr & mask) == net. */
	__u32 net;
	__u32 mask;
	/* The redirect header, as sent. */
	__u8 redirect[4];
	/* 0: pass everything. */
	__u32 enabled;
};

/* encap_stats[] */
#define ENCAP_DONE 0
#define ENCAP_SKIPPED_GSO 1
#define ENCAP_FAILED 2
#define ENCAP_STATS 3

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct engine_encap_config);
} encap_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, ENCAP_STATS);
	__type(key, __u32);
	__type(value, __u64);
} encap_stats SEC(".maps");

struct outer {
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
	__u8 gre[4];
	__u8 redirect[4];
};

static __always_inline void bump(__u32 index)
{
	__u64 *c = bpf_map_lookup_elem(&encap_stats, &index);

	if (c)
		__sync_fetch_and_add(c, 1);
}

SEC("classifier")
int tc_wccp_encap(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct engine_encap_config *cfg;
	struct outer o = {};
	__u32 zero = 0, sum = 0;
	__u8 *ip = data + 14;
	__u16 *w;

	cfg = bpf_map_lookup_elem(&encap_config, &zero);
	if (!cfg || !cfg->enabled || skb->protocol != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	if ((void *)(ip + 20) > data_end || ip[9] != IPPROTO_TCP)
		return TC_ACT_OK;
	if ((*(__u32 *)(ip + 16) & cfg->mask) != cfg->net)
		return TC_ACT_OK;
	if (skb->gso_segs > 1) {
		bump(ENCAP_SKIPPED_GSO);
		return TC_ACT_OK;
	}

	o.ver_ihl = 0x45;
	o.tot_len = bpf_htons(skb->len - 14 + sizeof(o));
	o.ttl = 64;
	o.protocol = IPPROTO_GRE;
	o.saddr = cfg->router_addr;
	o.daddr = cfg->engine_addr;
	o.gre[2] = 0x88;
	o.gre[3] = 0x3e;
	__builtin_memcpy(o.redirect, cfg->redirect, 4);
	w = (__u16 *)&o;
#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += w[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	o.check = ~sum & 0xffff;

	if (bpf_skb_adjust_room(skb, sizeof(o), BPF_ADJ_ROOM_MAC, 0) ||
	    bpf_skb_store_bytes(skb, 14, &o, sizeof(o), 0)) {
		bump(ENCAP_FAILED);
		return TC_ACT_SHOT;
	}
	bump(ENCAP_DONE);
	return TC_ACT_OK;
}

REDIRECTOR_LICENSE;
