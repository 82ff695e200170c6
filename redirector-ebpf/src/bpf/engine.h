/* SPDX-License-Identifier: MIT OR GPL-2.0-only */
/*
 * The engine's data plane (engine.c): map keys, values and constants shared
 * with Rust. Each struct has a #[repr(C)] twin in
 * redirector-ebpf/src/engine_plane.rs; the maps of engine.c put every one of
 * them in that object's BTF, and tests/engine_layout.rs compares the two.
 *
 * Maps:
 *
 *   engine_config[1]      own address, mark, copy interface, flags
 *   engine_routers        HASH router address -> flags: GRE is accepted only
 *                         from these outer sources
 *   engine_ports[65536]   inner TCP destination port -> proxy listener port
 *                         (0: not a service port)
 *   engine_rules          LPM_TRIE {port, destination prefix} -> return rule
 *   engine_stats          PERCPU_ARRAY of {packets, bytes}
 *
 * All addresses are in network order, ports in host order unless said
 * otherwise.
 */
#ifndef ENGINE_H
#define ENGINE_H

#include <linux/types.h>

/* engine_config.flags */
#define ENGINE_ENABLED 0x1 /* off: every packet passes untouched */
#define ENGINE_L2 0x2      /* accept L2-forwarded packets, not only GRE */

/* engine_rule.flags */
#define RULE_RETURN 0x1  /* return to the router instead of proxying */
#define RULE_REWRITE 0x2 /* set the inner destination to new_daddr first */
#define RULE_COPY 0x4    /* clone the frame, as received, to copy_ifindex */

/* engine_routers value */
#define ROUTER_KNOWN 0x1

/* Bits of engine_rule_key.prefixlen that cover port and reserved. */
#define RULE_PORT_BITS 32

/*
 * Why a packet got its verdict: exactly one per packet, counted in
 * engine_stats[reason]. Rust twin: engine_plane::Reason.
 */
#define ER_NOT_IPV4 0        /* pass: not IPv4 */
#define ER_DISABLED 1        /* pass: ENGINE_ENABLED clear */
#define ER_NOT_REDIRECTED 2  /* pass: not WCCP GRE to us, not L2 service */
#define ER_STRANGER 3        /* drop: WCCP GRE from an unknown router */
#define ER_TRUNCATED 4       /* drop: WCCP GRE too short for its headers */
#define ER_BAD_HEADER 5      /* drop: GRE flags, redirect header flags */
#define ER_BAD_INNER 6       /* drop: inner packet not a sane IPv4/TCP */
#define ER_ESTABLISHED 7     /* decapsulated, assigned to its socket */
#define ER_PROXIED_SYN 8     /* decapsulated, assigned to the listener */
#define ER_RETURN_NO_SOCKET 9 /* returned: not a SYN, no socket */
#define ER_RETURN_RULE 10    /* returned: a return rule matched */
#define ER_RETURN_NOT_SERVED 11 /* returned: not TCP, fragment, no service */
#define ER_RETURN_NO_LISTENER 12 /* returned: SYN, but no listener */
#define ER_ADJUST_FAILED 13  /* drop: bpf_skb_adjust_room refused */
#define ER_ASSIGN_FAILED 14  /* drop: bpf_sk_assign refused */
#define ER_REDIRECT_FAILED 15 /* drop: the return could not be written */
#define ER_REASONS 16
/* Counted besides the reason. */
#define EC_COPIED 16         /* a clone went to copy_ifindex */
#define EC_COPY_FAILED 17    /* bpf_clone_redirect refused */
#define EC_REWRITTEN 18      /* the inner destination was rewritten */
#define EC_L2 19             /* the packet came by L2 forwarding */
#define ENGINE_STATS 20

/* engine_config[0]. Rust twin: engine_plane::EngineConfigRaw. */
struct engine_config {
	/* Outer destination of accepted GRE (0: any); its outer source when
	 * returned. L2 packets to this address are the engine's own. */
	__u32 addr;
	/* skb->mark of packets handed to a local socket, for the
	 * `fwmark -> local route` policy rule. */
	__u32 mark;
	/* Interface that RULE_COPY clones go out of (0: copies off). */
	__u32 copy_ifindex;
	/* ENGINE_* */
	__u32 flags;
	/* Return rules installed; 0 skips the rule lookups. */
	__u32 rules;
	__u32 reserved;
};

/* engine_ports value. Rust twin: engine_plane::PortEntry. */
struct engine_port {
	/* The listener's port; 0: not a service port. */
	__u16 proxy_port;
	__u16 reserved;
};

/*
 * engine_rules key. The LPM data is port (network order), reserved (zero),
 * then the destination address, so prefixlen = RULE_PORT_BITS + prefix
 * length. Port 0 stands for every port: a packet is looked up with its own
 * port first, then with port 0. Rust twin: engine_plane::RuleKey.
 */
struct engine_rule_key {
	__u32 prefixlen;
	__u16 port;
	__u16 reserved;
	__u32 addr;
};

/* engine_rules value. Rust twin: engine_plane::RuleEntry. */
struct engine_rule {
	/* RULE_* */
	__u32 flags;
	/* RULE_REWRITE: the new inner destination. */
	__u32 new_daddr;
};

#endif /* ENGINE_H */
