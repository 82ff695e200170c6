/* SPDX-License-Identifier: MIT OR GPL-2.0-only */
/*
 * Shared by every eBPF program of the redirector, and the source of truth for
 * the layout of map keys and values: each struct here has a #[repr(C)] twin in
 * redirector-ebpf/src/layout.rs, and layout_check.c puts it in BTF so that the
 * Rust tests can compare sizes and field offsets. Every constant here has a
 * twin of the same name in redirector-ebpf/src/layout.rs.
 *
 * Map layout. A packet on the common path does three lookups, all in ARRAY
 * maps, which the kernel inlines (no helper call, no hashing): control, its
 * interface's flags, and its table slot, which holds everything
 * classification indexes:
 *
 *   control[1]            generation, heartbeat, grace, enabled, which slots
 *                         have L2-return engines
 *   ifaces[MAX_IFINDEX]   per-ingress-interface flags (exclude, engine-facing)
 *   slots[2]              struct redirector_slot, one table each:
 *     header              best service of those that match any port; the
 *                         slot's MSS clamp; whether any service matches
 *                         source ports (else they are not looked at)
 *     engine_filter[1024 words]
 *                         65536-bit filter of engine source addresses (low 16
 *                         bits), so that only candidates pay a hash lookup
 *     mac_filter[1024 words]
 *                         65536-bit filter of the MACs of L2-return engines
 *                         (last two bytes): the same trick. Read only when the
 *                         control record's CONTROL_L2_RETURN bit for the slot
 *                         says there are such engines
 *     services[256 ranks]
 *     engines[256 engine indices]
 *     buckets[256 ranks][256 buckets or mask values]
 *     ports[2 protocols][65536 ports]
 *                         best-priority service matching the port as a
 *                         destination port and as a source port
 *   engine_addrs          HASH {slot, address} -> engine index (returns, and
 *                         the engines' own connections)
 *   engine_macs           HASH {slot, MAC} -> engine index (L2 return)
 *   prefixes              LPM_TRIE {slot, rank, address/len} -> PREFIX_*:
 *                         the redirect and skip lists. Keyed by slot like
 *                         everything else, so that a list changes with the
 *                         generation flip; looked up only for services whose
 *                         options say they have lists (a helper call each)
 *   conns                 LRU_HASH flow -> engine chosen at its SYN
 *   stats                 PERCPU_ARRAY of one value per CPU holding every
 *                         {packets, bytes} counter (looked up once per packet)

 *
 * Services are stored by rank, rank 0 the highest priority, so choosing among
 * the services that match a packet is a maximum of three preferences
 * (MAX_SERVICES - rank, 0 for none): the one of its destination port, of its
 * source port, and of the any-port services. The cost
 * does not grow with the number of services.
 *
 * Both programs of redirect.c (xdp_redirect at ingress, tc_redirect_out at
 * egress) live in one object and so share these maps; classify.h holds the
 * classification they share.
 *
 * A table update is atomic: the controller writes a whole new table into the
 * slot the programs are not reading (1 - generation & 1), then increments the
 * generation. A packet reads the generation once and sees one slot only.
 */
#ifndef REDIRECTOR_H
#define REDIRECTOR_H

#include <linux/types.h>
#include <bpf/bpf_helpers.h>

/*
 * The kernel refuses GPL-only helpers to programs whose license string is not
 * GPL-compatible; "Dual MIT/GPL" is, and matches this SPDX line. One use per
 * object that holds programs.
 */
#define REDIRECTOR_LICENSE char _license[] SEC("license") = "Dual MIT/GPL"

/* Table slots: two, written alternately. */
#define SLOTS 2
/* Services per table (the protocol's service ids are one byte). */
#define MAX_SERVICES 256
/* Engine indices per table. */
#define MAX_ENGINES 256
/* Buckets per service: 256 hash buckets, or up to 128 mask values. */
#define BUCKETS 256
/* Ports per protocol. */
#define PORTS 65536
/* Protocols with ports: index 0 is TCP, 1 is UDP. */
#define PORT_PROTOCOLS 2
/* Interfaces with flags; others get none. */
#define MAX_IFINDEX 1024
/* 64-bit words of the engine source-address filter, per slot. */
#define FILTER_WORDS 1024
/* Preference of the best-priority service: MAX_SERVICES - rank, so that a
 * zeroed (fresh) map means no service; 0 is none. */
#define NO_SERVICE_PREF 0
/* Mask positions per service (a mask selects at most 7 bits). */
#define MASK_POSITIONS 8
/* An unused mask position. */
#define NO_POSITION 0xff

/* control.flags */
#define CONTROL_ENABLED 0x1
/* Shifted left by the slot: that slot has L2-return engines. A bit of the
 * record every packet reads anyway, so that tables without them pay nothing
 * for the L2 return check; written with the generation it belongs to. */
#define CONTROL_L2_RETURN 0x2
/* Some interface has flags in ifaces[]: otherwise the ingress interface is not
 * even read (at XDP it is three dependent loads away). */
#define CONTROL_IFACES 0x8

/* ifaces[] values */
#define IFACE_EXCLUDED 0x1      /* never redirect traffic arriving here */
#define IFACE_ENGINE_FACING 0x2 /* only packet return here, never redirect */

/* service.options */
#define SERVICE_DYNAMIC 0x1 /* D bit of the redirect header */
#define SERVICE_MASK 0x2    /* mask assignment (else hash) */
#define SERVICE_LISTS 0x4   /* has a skip or a redirect list: look up prefixes */
#define SERVICE_REDIRECT_LIST 0x8 /* has a redirect list: unlisted packets skip */
#define SERVICE_MSS_CLAMP 0x10 /* redirected in GRE: its SYN-ACKs are clamped */

/* prefixes[] values: what the listed prefixes containing an address say. The
 * table compiler stores in each prefix the kinds of every listed prefix that
 * contains it, so that one longest-prefix match answers for all of them. */
#define PREFIX_SKIP 0x1     /* in the skip list: never redirected */
#define PREFIX_REDIRECT 0x2 /* in the redirect list */
/* Bits of the prefixes key before the address: slot, rank, reserved. */
#define PREFIX_KEY_BITS 32
/* Prefixes per table slot. */
#define MAX_PREFIXES 16384

/* table.flags */
#define TABLE_SRC_PORTS 0x1 /* a service matches source ports: look them up */

/* bucket.flags */
#define BUCKET_ASSIGNED 0x1  /* engine is meaningful */
#define BUCKET_ALTERNATE 0x2 /* use the alternate hash's bucket (hash only) */
#define BUCKET_STICKY 0x4    /* owner changed recently: TCP flows consult conns */

/* engine.method */
#define METHOD_GRE 1
#define METHOD_L2 2

/* engine.flags */
#define ENGINE_USABLE 0x1

/* WCCP service flags (draft-01 Service Info). */
#define SF_SRC_IP_HASH 0x0001
#define SF_DST_IP_HASH 0x0002
#define SF_SRC_PORT_HASH 0x0004
#define SF_DST_PORT_HASH 0x0008
#define SF_SRC_IP_ALT_HASH 0x0100
#define SF_DST_IP_ALT_HASH 0x0200
#define SF_SRC_PORT_ALT_HASH 0x0400
#define SF_DST_PORT_ALT_HASH 0x0800

/* Redirect header flags, Wireshark layout (first nibble stays 0). */
#define RH_DYNAMIC 0x01
#define RH_ALTERNATE 0x02

/*
 * Why a packet got its verdict: exactly one per packet, counted in stats[reason].
 */
#define REASON_NOT_IPV4 0         /* not IPv4 (ARP, IPv6, ...) */
#define REASON_MALFORMED 1        /* truncated or invalid headers */
#define REASON_DISABLED 2         /* no table written, or disabled */
#define REASON_EXCLUDED 3         /* arrived on an excluded interface */
#define REASON_ENGINE_FACING 4    /* arrived on an engine-facing interface */
#define REASON_FRAGMENT 5         /* IP fragment: never redirected */
#define REASON_NO_SERVICE 6       /* no service matches */
#define REASON_ENGINE_SOURCE 7    /* sent by an engine: its own connection */
#define REASON_UNASSIGNED 8       /* fail open: bucket or value unassigned */
#define REASON_ENGINE_DOWN 9      /* fail open: engine not usable */
#define REASON_HEARTBEAT 10       /* fail open: controller heartbeat stale */
#define REASON_TOO_BIG 11         /* would exceed the MTU, DF clear */
#define REASON_TOO_BIG_DF 12      /* would exceed the MTU, DF set: answered with
				   * ICMP fragmentation needed (XDP_TX) */
#define REASON_REDIRECT_GRE 13    /* redirected in GRE */
#define REASON_REDIRECT_L2 14     /* redirected by L2 rewrite */
#define REASON_RETURN_GRE 15      /* returned packet, decapsulated */
#define REASON_RETURN_BAD 16      /* GRE from an engine that we do not decapsulate */
#define REASON_ADJUST_FAILED 17   /* the kernel refused to resize (or tag) it: passed */
#define REASON_RETURN_L2 18       /* from an L2-return engine's MAC: passed */
#define REASON_LIST_SKIP 19       /* source or destination in the skip list */
#define REASON_NOT_LISTED 20      /* neither address in the redirect list */
/* Reasons stay below STATS_EVENTS_BASE. */
#define REASONS 32

/* Counters of things done to a packet besides its verdict, in stats[]'s
 * reason block above the reasons. */
#define STATS_EVENTS_BASE 24
#define STATS_MSS_CLAMPED (STATS_EVENTS_BASE + 0) /* SYN-ACK MSS lowered */
#define STATS_GSO_ENCAPSULATED (STATS_EVENTS_BASE + 1) /* GSO packet sent in GRE
							   * for the kernel to segment */

/* stats[] index layout. */
#define STATS_SERVICE_BASE REASONS /* + service id * STATS_PER_SERVICE + kind */
#define STATS_PER_SERVICE 3
#define STATS_SERVICE_REDIRECTED 0
#define STATS_SERVICE_FAILED_OPEN 1
#define STATS_SERVICE_SKIPPED 2 /* by its skip or redirect list */
#define STATS_ENGINE_BASE (STATS_SERVICE_BASE + 256 * STATS_PER_SERVICE)
#define STATS_PER_ENGINE 3
#define STATS_ENGINE_REDIRECTED 0
#define STATS_ENGINE_RETURNED 1
#define STATS_ENGINE_CONN_HITS 2
#define STATS_ENTRIES (STATS_ENGINE_BASE + MAX_ENGINES * STATS_PER_ENGINE)

/* Packet and byte counts, the value of per-CPU counter maps.
 * Rust twin: redirector_ebpf::layout::Counters. */
struct redirector_counters {
	__u64 packets;
	__u64 bytes;
};

/* Every counter of one CPU: the one value of the per-CPU stats map, indexed as
 * above. 25 KiB, within the 32 KiB a per-CPU value may have. Rust twin:
 * layout::StatsBlock. */
struct redirector_stats {
	struct redirector_counters c[STATS_ENTRIES];
};

/* The one control record, control[0]. Rust twin: layout::Control. */
struct redirector_control {
	/*
	 * The controller's last heartbeat, in jiffies (bpf_jiffies64). Jiffies,
	 * not bpf_ktime_get_ns: the kernel inlines bpf_jiffies64, while the
	 * ktime helper call cost about 31 ns per packet here, a third of the
	 * program; a dead-man switch needs no better than a tick.
	 */
	__u64 heartbeat_jiffies;
	/* Redirection stops when jiffies > heartbeat_jiffies + grace_jiffies. */
	__u64 grace_jiffies;
	/* Slot (generation & 1) that packets read. */
	__u32 generation;
	/* CONTROL_* */
	__u32 flags;
};

/* slots[].ports[] value. Rust twin: layout::PortEntry. */
struct redirector_port {
	/* Preference of the best service matching this destination port. */
	__u16 dst_pref;
	/* Preference of the best service matching this source port. */
	__u16 src_pref;
};

/* slots[].header. Rust twin: layout::TableHeader. */
struct redirector_table {
	/* Preference of the best service of each protocol matching any port. */
	__u16 any_pref[PORT_PROTOCOLS];
	/* Services in this slot, for the controller's reading. */
	__u16 services;
	/* Largest MSS a SYN-ACK of a SERVICE_MSS_CLAMP service may announce;
	 * 0: no clamping. */
	__u16 mss_clamp;
	/* TABLE_* */
	__u16 flags;
	__u16 reserved[3];
};

/* slots[].services[] value. Rust twin: layout::ServiceEntry. */
struct redirector_service {
	/* WCCP service flags (SF_*). */
	__u32 flags;
	/* Service id (redirect header, counters). */
	__u8 service_id;
	/* SERVICE_* */
	__u8 options;
	__u8 reserved[2];
	/*
	 * Mask assignment: bit k of the value index is the bit at mask_pos[k] of
	 * the 96-bit number src_addr:dst_addr:src_port:dst_port (bit 0 is the
	 * lowest bit of dst_port); NO_POSITION ends the list.
	 */
	__u8 mask_pos[MASK_POSITIONS];
};

/* slots[].buckets[] value. Rust twin: layout::BucketEntry. */
struct redirector_bucket {
	/* Engine index when BUCKET_ASSIGNED. */
	__u8 engine;
	/* BUCKET_* */
	__u8 flags;
};

/* slots[].engines[] value. Rust twin: layout::EngineEntry. */
struct redirector_engine {
	/* Engine address, network order: outer destination, and identity. */
	__u32 addr;
	/* Outer source of GRE packets, network order. */
	__u32 router_addr;
	/* Destination MAC: the engine's, or its next hop's. */
	__u8 dst_mac[6];
	/* Source MAC: the egress interface's. */
	__u8 src_mac[6];
	/* Egress interface; 0 sends back out of the ingress one (XDP_TX). */
	__u32 ifindex;
	/* Largest IP packet the path takes after encapsulation; 0: unchecked. */
	__u16 mtu;
	/* METHOD_* */
	__u8 method;
	/* ENGINE_* */
	__u8 flags;
	/* 802.1Q tag control (VLAN id, network order) the engine is reached with
	 * out of ifindex, for engines behind a VLAN device; 0: untagged. */
	__u16 vlan_tci;
	__u16 reserved;
};

/* engine_addrs key. Rust twin: layout::EngineKey. */
struct redirector_engine_key {
	__u32 slot;
	/* Network order. */
	__u32 addr;
};

/* engine_macs key. Rust twin: layout::MacKey. */
struct redirector_mac_key {
	__u32 slot;
	__u8 mac[6];
	__u8 reserved[2];
};

/*
 * prefixes key (BPF_MAP_TYPE_LPM_TRIE: prefixlen, then the bits it counts).
 * A stored prefix a/len has prefixlen PREFIX_KEY_BITS + len; a lookup uses
 * PREFIX_KEY_BITS + 32. Rust twin: layout::PrefixKey.
 */
struct redirector_prefix_key {
	__u32 prefixlen;
	__u8 slot;
	/* The service's rank. */
	__u8 rank;
	__u8 reserved[2];
	/* Network order. */
	__u32 addr;
};

/*
 * One table slot, the value of slots[slot]: everything classification reads
 * by index, in one map value, so that a packet pays one map lookup for all of
 * it (every lookup is a call to the compiler, which spills the live registers
 * around it) and the controller writes a whole slot in one system call. Small
 * and hot parts first; the port table, 512 KiB, last. Rust twin:
 * layout::SlotLayout.
 */
struct redirector_slot {
	struct redirector_table header;
	/* Bit (addr & 0xffff) of the engines' addresses, host order: a packet
	 * whose source hits it is checked against engine_addrs. */
	__u64 engine_filter[FILTER_WORDS];
	/* Bit (last two MAC bytes) of L2-return engines' MACs, before engine_macs. */
	__u64 mac_filter[FILTER_WORDS];
	/* By rank: MAX_SERVICES - preference. */
	struct redirector_service services[MAX_SERVICES];
	struct redirector_engine engines[MAX_ENGINES];
	/* [rank * BUCKETS + bucket or mask value] */
	struct redirector_bucket buckets[MAX_SERVICES * BUCKETS];
	/* [protocol * PORTS + port] */
	struct redirector_port ports[PORT_PROTOCOLS * PORTS];
};

/* conns key: a TCP flow as the client sends it. Rust twin: layout::FlowKey. */
struct redirector_flow {
	/* Network order. */
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 protocol;
	__u8 reserved[3];
};

/* conns value. Rust twin: layout::ConnEntry. */
struct redirector_conn {
	/* Address of the engine chosen (network order), so that a reused index
	 * never sends a flow to another engine. */
	__u32 engine_addr;
	/* Its index. */
	__u32 engine;
};

#endif /* REDIRECTOR_H */
