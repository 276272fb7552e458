/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * meshcut_kern_user.h — included by BOTH the BPF C (bpf/ hooks) and the C++ user
 * space (libmeshcut, meshcutd, the CNI plugin, tests).
 *
 * Plain types only, plus a few pure static inline functions that both sides run
 * (key construction), so that the unit tests exercise exactly the code the kernel
 * runs. No includes of its own: the includer provides __u8..__u64 (<linux/types.h>).
 *
 * Every struct here is part of the pinned-map contract (see MC_LAYOUT_VERSION).
 * Keys have explicit padding and are zero-initialised; C++ static_asserts their
 * size and unique object representation (libmeshcut/abi.h).
 */
#ifndef MESHCUT_KERN_USER_H
#define MESHCUT_KERN_USER_H

/* Bump on any change to a struct, a map definition or a pin name below. */
#define MC_LAYOUT_VERSION 3	  /* 3: the objectives maps (meshcut_obj.h) */
#define MC_META_MAGIC 0x4d435554u /* "MCUT" */

/* Pin layout under the pin root (default /sys/fs/bpf/meshcut). Names <= 15 chars. */
#define MC_PIN_DIR_MAPS "maps"
#define MC_PIN_DIR_PROGS "progs"
#define MC_PIN_DIR_LINKS "links"
#define MC_MAP_SOCKHASH "mc_sockhash"
#define MC_MAP_SK_STATE "mc_sk_state"
#define MC_MAP_CONNS "mc_conns"
#define MC_MAP_PODS "mc_pods"
#define MC_MAP_POD_IPS "mc_pod_ips"
#define MC_MAP_PAIR_KIND "mc_pair_kind"
#define MC_MAP_SYN_SEEN "mc_syn_seen"
#define MC_MAP_CNI_PODS "mc_cni_pods"
#define MC_MAP_FLOWS "mc_flows"
#define MC_MAP_FLOW_OWNER "mc_flow_owner"
#define MC_MAP_CNI_STATS "mc_cni_stats"
#define MC_PROG_TC_OVERLAY "tc_overlay"
#define MC_PROG_TC_VETH "tc_veth"
/* Our tc filter on a pod's host veth: its own handle and priority, so that it
 * never replaces another agent's filter. */
#define MC_TC_HANDLE 0x4d43u /* "MC" */
#define MC_TC_PRIO 0x4d43u
#define MC_MAP_COUNTERS "mc_counters"
#define MC_MAP_CONFIG "mc_config"
#define MC_MAP_META "mc_meta"
#define MC_PROG_SOCKOPS "sockops"
#define MC_PROG_SK_MSG "sk_msg"
#define MC_PROG_SK_SKB "sk_skb"
#define MC_LINK_SOCKOPS "sockops_cgroup"

/* Map sizes (each map's max_entries; the pinned contract: abi.h hashes them). */
#define MC_DEFAULT_MAX_SOCKETS 262144 /* mc_sockhash, mc_conns (--max-sockets) */
#define MC_MAX_PODS 16384	      /* mc_pods, mc_cni_pods */
#define MC_POD_MAX_IPS 4	      /* addresses per pod (mc_pod_ips: pods x this) */
#define MC_MAX_PAIR_KINDS 65536	      /* mc_pair_kind, mc_syn_seen (LRU) */
#define MC_MAX_FLOWS 262144	      /* mc_flows, mc_flow_owner (LRU) */

/* Time units (bpf_ktime_get_ns and CLOCK_REALTIME are in ns). */
#define MC_NSEC_PER_MSEC 1000000ull
#define MC_NSEC_PER_SEC 1000000000ull

/* Which side of the TCP connection a socket is. */
enum mc_side {
	MC_SIDE_ACTIVE = 0,  /* connect()ed: the initiator */
	MC_SIDE_PASSIVE = 1, /* accept()ed */
};

/*
 * Key of the sockhash, one per enrolled established socket.
 *
 * The two sockets of a local connection do not see mirror-image 4-tuples when
 * Istio's REDIRECT sits between them (paper Table 2): socket (1)
 * podIP:r -> svcIP:80 pairs with socket (2) 127.0.0.1:15001 <- podIP:r.
 * Usually. The initiator's port is NOT safe either: when the REDIRECT's reply
 * tuple (127.0.0.1:15001 <- podIP:r) is still held by conntrack for an earlier
 * connection from r to another destination (TIME_WAIT, 120 s), conntrack
 * rewrites the source port and socket (2) sees podIP:q. NAT never rewrites
 * the initiator's address (REDIRECT and kube-proxy's DNAT change the
 * destination; a masquerade leaves the pair unpaired: normal path) nor the
 * TCP sequence numbers, so a pair is identified by
 *   - the initiator address (init_ip): the active socket's local address,
 *     the passive socket's remote address;
 *   - the initial sequence numbers of both directions, read at establishment
 *     (snd_nxt/rcv_nxt are ISN+1 on both sides then): 64 bits the kernel
 *     draws per connection from a keyed hash of its 4-tuple and a clock, so
 *     two live connections of one initiator address share them only by
 *     chance (about 2^-64 a pair), and then the second insert fails
 *     (BPF_NOEXIST) and that connection takes the normal path;
 *   - scope: the netns cookie when the initiator address is loopback (not
 *     unique on the node: every pod has 127.0.0.1 and 127.0.0.6), 0 for a pod
 *     IP, which is unique on the node and must match across two netns
 *     (sidecar <-> sidecar on one node);
 *   - side: the socket's own side. A socket's peer has the same key with the
 *     other side.
 */
struct mc_sock_key {
	__u64 scope;	/* netns cookie if init_ip is 127/8, else 0 */
	__u32 init_ip;	/* network byte order */
	__u32 isn_init; /* initiator's ISN+1 (host order) */
	__u32 isn_resp; /* responder's ISN+1 (host order) */
	__u16 pad16;	/* 0: the initiator's port is not part of the key (above) */
	__u8 side;	/* enum mc_side */
	__u8 pad;
};

/*
 * mc_syn_seen's key: a connection's initiator as an enrolled listener saw it
 * in the SYN (the listener's request socket has no ISNs yet). The initiator
 * looks itself up at establishment with its own local address and port.
 */
struct mc_syn_key {
	__u64 scope;	 /* netns cookie if init_ip is 127/8, else 0 */
	__u32 init_ip;	 /* network byte order */
	__u16 init_port; /* host order */
	__u16 pad;
};

/* How a pair of sockets relates; decides which counters a redirect feeds. */
enum mc_kind {
	MC_KIND_INTRA = 0, /* app <-> its own sidecar, one netns */
	MC_KIND_NODE = 1,  /* pod <-> pod on one node, two netns */
	MC_KIND__N = 2,
};

/* The sticky per-socket, per-direction (= per sending socket) decision. */
enum mc_decision {
	MC_DECISION_UNDECIDED = 0,
	MC_DECISION_REDIRECT = 1,
	MC_DECISION_PASS = 2, /* absorbing: never goes back to REDIRECT */
};

/* Value of mc_sk_state (BPF_MAP_TYPE_SK_STORAGE): lives and dies with the socket.
 * `meshcutd conns` reads every live one through a BPF iterator, or, where the
 * kernel refuses iterators, from mc_conns (HASH, key: the socket's own
 * struct mc_sock_key, value: this struct), which sockops fills at
 * establishment and empties at TCP_CLOSE and sk_msg keeps current (decision,
 * kind, bytes) while MC_CFG_F_CONNS_TABLE is set. */
struct mc_sock_state {
	struct mc_sock_key peer; /* key of the peer socket in mc_sockhash */
	__u8 decision;		 /* enum mc_decision */
	__u8 kind;		 /* enum mc_kind */
	__u8 side;		 /* enum mc_side of this socket */
	__u8 pod_flags;		 /* MC_POD_F_* of the socket's pod at establishment */
	__u8 pad[4];
	__u64 netns_cookie;
	__u32 local_ip; /* network order */
	__u32 remote_ip;
	__u16 local_port; /* host order */
	__u16 remote_port;
	__u32 pad2;
	__u64 bytes_redirected; /* sent through the shortcut */
	__u64 bytes_passed;	/* sent on the normal path (counted by sk_msg) */
};

/* Value of mc_pods, keyed by the pod's netns cookie (__u64). Written by the
 * CNI plugin (or `meshcutd enroll`), read by the BPF programs. */
#define MC_POD_F_INTRA 0x1u /* app <-> sidecar socket shortcut */
#define MC_POD_F_NODE 0x2u  /* pod <-> pod, same node, socket shortcut */
#define MC_POD_F_CROSS 0x4u /* tc shortcut across nodes */
#define MC_POD_F_ALL (MC_POD_F_INTRA | MC_POD_F_NODE | MC_POD_F_CROSS)
struct mc_pod {
	__u32 ip4[MC_POD_MAX_IPS]; /* network byte order, 0 = unused */
	__u32 flags;		   /* MC_POD_F_* */
	__u32 host_ifindex;	   /* host-side veth, 0 if unknown */
	__u8 pod_mac[6];
	__u8 host_mac[6];
};

/* mc_pod_ips: key __u32 IPv4 (network order) -> value __u64 netns cookie. */

/* mc_cni_pods: the CNI plugin's record of each attachment, keyed the way CNI
 * names an attachment (container ID + interface), so that DEL finds it without
 * a netns. User space only (no BPF program reads it); it lives in bpffs so that
 * it survives meshcutd restarts and every plugin invocation sees it. */
#define MC_CNI_ID_LEN 72
#define MC_CNI_IFNAME_LEN 16
#define MC_CNI_CLASS_LEN \
	32 /* the objectives' caller class a pod asked for (annotation meshcut.io/class) */
struct mc_cni_key {
	char container_id[MC_CNI_ID_LEN]; /* NUL-padded */
	char ifname[MC_CNI_IFNAME_LEN];	  /* NUL-padded, e.g. "eth0" */
};
#define MC_CNI_F_TC_ATTACHED 0x1u /* our tc filter is on the host veth */
#define MC_CNI_F_QDISC_OURS 0x2u  /* we created the clsact qdisc */
struct mc_cni_pod {
	__u64 netns_cookie;
	__u64 added_ns;	   /* CLOCK_REALTIME of the ADD */
	struct mc_pod pod; /* what mc_pods holds for this netns */
	__u32 cni_flags;   /* MC_CNI_F_* */
	char host_ifname[16];
	char pod_namespace[64];
	char pod_name[128];
	char pod_uid[40];
	char netns_path[128];
	char caller_class[MC_CNI_CLASS_LEN]; /* its annotation meshcut.io/class, NUL-padded */
};

/* mc_config: array, one entry. */
#define MC_CFG_F_CROSS_NODE 0x1u /* the node's switch for the tc shortcut */
/* sockops and sk_msg keep a copy of every socket's mc_sock_state in mc_conns
 * (an ordinary hash map that user space lists), for kernels that refuse the
 * BPF iterator over mc_sk_state (tracing programs refused: lockdown,
 * hardened builds). Off otherwise: it costs a hash update per connection and
 * a lookup per send. */
#define MC_CFG_F_CONNS_TABLE 0x2u
/* Managed services exist (meshcut_obj.h): sockops and sk_msg measure the
 * sockets connect4 tagged. Off: they skip that work entirely. */
#define MC_CFG_F_OBJECTIVES 0x4u
struct mc_config {
	__u32 enabled;	       /* 0: every new decision is PASS and REDIRECT turns PASS */
	__u32 flags;	       /* MC_CFG_F_* */
	__u32 pod_cidr;	       /* the cluster's pod CIDR (network order); 0: tc shortcut off */
	__u32 pod_cidr_mask;   /* network order */
	__u32 overlay_ifindex; /* the overlay device (flannel.1, vxlan.calico) */
	__u32 pad;
};

/* mc_flows: TCP flows between pod IPs that are known to need no translation on
 * this node (a SYN seen with pod IPs on both ends as it left a local pod, or as
 * it arrived for one from the overlay). Only those take the tc shortcut, both
 * directions; everything else (ClusterIP, NodePort, masquerade, UDP) keeps the
 * normal path and its netfilter. Key: the two ends, smaller IP first. */
struct mc_flow_key {
	__u32 ip_lo; /* network order */
	__u32 ip_hi;
	__u16 port_lo; /* network order, the port of ip_lo */
	__u16 port_hi;
};
#define MC_FLOW_F_FIN 0x1u /* a FIN was seen: the flow is closing */
/* The handshake takes the normal path on every node, so that netfilter
 * (NetworkPolicy, kube-proxy) decides the connection and conntrack knows it;
 * only a flow whose handshake completed there is shortcut. A flow is in the
 * handshake while one of these is set; neither set: established. */
#define MC_FLOW_F_SYN_SENT 0x2u	 /* a SYN went the normal path */
#define MC_FLOW_F_SYN_ACKED 0x4u /* then its SYN-ACK: the next ACK ends the handshake */
/* conntrack's entry of the flow was ended (its timeout shortened to
 * MC_CT_END_MS) once the flow was on the shortcut: conntrack sees none of its
 * later packets, so the entry would linger for the 5-day established timeout,
 * and its stale window would call the packets of a flow that falls back
 * mid-stream INVALID; without it the normal path picks the flow up again. */
#define MC_FLOW_F_CT_ENDED 0x8u
#define MC_CT_END_MS 1000u
struct mc_flow {
	__u64 last_ns; /* bpf_ktime_get_ns of the last packet that refreshed it */
	__u32 flags;   /* MC_FLOW_F_* */
	__u32 pad;
};
/* mc_flow_owner: a local pod's (ip, port) -> the flow it last started there. */
struct mc_flow_owner_key {
	__u32 ip;   /* network order */
	__u16 port; /* network order */
	__u16 pad;
};
/* Idle flows age out (the pod vanished without FIN/RST). Long enough for
 * keep-alive connections: a flow that falls back mid-stream meets conntrack's
 * loose pick-up on the normal path. */
#define MC_FLOW_IDLE_NS (600 * MC_NSEC_PER_SEC)
/* A closing flow (FIN seen) is forgotten sooner: its ports may be reused. */
#define MC_FLOW_CLOSING_IDLE_NS (10 * MC_NSEC_PER_SEC)

/* mc_meta: array, one entry: the layout a pin root holds, and what the daemon found. */
#define MC_FEAT_NETNS_COOKIE 0x1u /* bpf_get_netns_cookie in sockops and sk_msg */
#define MC_FEAT_SOCKHASH 0x2u
#define MC_FEAT_SK_STORAGE 0x4u
#define MC_FEAT_FIONREAD_BUG 0x8u    /* regression of commit 929e30f93125 seen */
#define MC_FEAT_SKB_VERDICT 0x10u    /* no-op SK_SKB verdict attached to the sockhash */
#define MC_FEAT_FIONREAD_FIXED 0x20u /* the probe saw FIONREAD right with the verdict */
#define MC_FEAT_BPF_ITER 0x40u	     /* BPF iterators load (conns/pods read mc_sk_state directly) */
#define MC_FEAT_TP_BTF 0x80u	     /* tp_btf programs load (trace: typed hook) */
#define MC_FEAT_RAW_TP 0x100u	     /* raw_tp programs load (trace: untyped hook) */
#define MC_FEAT_CONNS_TABLE 0x200u   /* mc_conns is kept (MC_CFG_F_CONNS_TABLE) */
#define MC_FEAT_PROBED 0x400u	     /* the tracing bits above were probed (not an older daemon) */
#define MC_FEAT_CT_KFUNCS 0x1000u    /* tc ends conntrack entries of shortcut flows (kfuncs) */
#define MC_FEAT_NO_TRACING 0x800u    /* tracing programs off by request (--no-tracing) */
struct mc_meta {
	__u32 magic;	      /* MC_META_MAGIC */
	__u32 layout_version; /* MC_LAYOUT_VERSION */
	__u32 features;	      /* MC_FEAT_* as probed by the last daemon start */
	__u32 daemon_pid;
	__u64 started_ns; /* CLOCK_REALTIME of the last daemon start */
	__u32 max_sockets;
	__u32 abi_fingerprint; /* hash of every pinned struct's layout (abi.h); 0: older daemon */
};

/* mc_cni_stats: array of __u64 the CNI plugin updates (under the pin lock)
 * and meshcutd exports. ADD durations as a histogram in microseconds. */
#define MC_ADD_BUCKETS 9
#define MC_ADD_BUCKET_BOUNDS_US                                                \
	{                                                                      \
		250, 500, 1000, 2000, 5000, 10000, 25000, 100000, 0 /* +Inf */ \
	}
enum mc_cni_stat {
	MC_S_ADD = 0,
	MC_S_ADD_ENROLLED,
	MC_S_ADD_SKIPPED, /* selection: namespace, annotation, switches */
	MC_S_ADD_FAILED,  /* enrollment failed (fail-open: pod started anyway) */
	MC_S_DEL,
	MC_S_CHECK,
	MC_S_CHECK_FAILED,
	MC_S_GC_REMOVED,
	MC_S_ADD_US_SUM,
	MC_S_ADD_BUCKET0, /* MC_ADD_BUCKETS cumulative-less buckets follow */
	MC_S__N = MC_S_ADD_BUCKET0 + MC_ADD_BUCKETS,
};

/* mc_counters: per-CPU array indexed by enum mc_counter; user space sums CPUs. */
enum mc_counter {
	/* sockops: what happened to an established socket */
	MC_C_SOCK_ADDED_ACTIVE = 0,
	MC_C_SOCK_ADDED_PASSIVE,
	MC_C_SOCK_NOT_ENROLLED,	   /* netns not enrolled (host process, unmeshed pod) */
	MC_C_SOCK_SKIP_REMOTE,	   /* peer not on this node: a passive socket from no pod, an
				    * active one whose SYN reached no enrolled listener */
	MC_C_SOCK_SKIP_FAMILY,	   /* IPv6 (not v4-mapped) */
	MC_C_SOCK_SKIP_EARLY_DATA, /* bytes moved before establishment (TCP Fast Open) */
	MC_C_SOCK_SKIP_DISABLED,   /* shortcut switched off for this pod or node */
	MC_C_SOCK_ADD_FAILED,	   /* sockhash full or key clash: normal path */
	MC_C_SOCK_NO_STORAGE,	   /* socket storage could not be created */
	/* sk_msg: what happened to a message (a chunk of a send) */
	MC_C_MSG_REDIRECT_INTRA,
	MC_C_BYTES_REDIRECT_INTRA,
	MC_C_MSG_REDIRECT_NODE,
	MC_C_BYTES_REDIRECT_NODE,
	MC_C_MSG_PASS_NO_PEER, /* first send found no peer: this direction stays normal */
	MC_C_BYTES_PASS_NO_PEER,
	MC_C_MSG_PASS_STICKY, /* later sends of a direction that is normal */
	MC_C_BYTES_PASS_STICKY,
	MC_C_MSG_PASS_PEER_GONE, /* redirected direction whose peer left the map */
	MC_C_MSG_PASS_DISABLED,	 /* meshcut detached or disabled */
	MC_C_MSG_NO_STATE,	 /* socket in the map without state */
	MC_C_PAIRS_REDIRECTED,	 /* directions that took the redirect */
	MC_C_SOCK_RTO_FAILED,	 /* couldn't shorten the minimum RTO of a local socket */
	/* tc: pod host veth (leaving a pod) and overlay device (arriving for one) */
	MC_C_TC_REDIRECT_OVERLAY, /* pod -> overlay device (bpf_redirect, FIB neighbour known) */
	MC_C_TC_REDIRECT_NEIGH,	  /* pod -> overlay device (bpf_redirect_neigh) */
	MC_C_TC_REDIRECT_PEER,	  /* overlay -> into the pod (bpf_redirect_peer) */
	MC_C_TC_REDIRECT_LOCAL,	  /* pod -> pod on this node (bpf_redirect_peer) */
	MC_C_TC_PASS_NOT_IP,	  /* ARP, IPv6, short frame */
	MC_C_TC_PASS_FRAGMENT,
	MC_C_TC_PASS_NOT_TCP,	   /* UDP (DNS), ICMP: may need NAT, never shortcut */
	MC_C_TC_PASS_NOT_POD,	   /* an end outside the pod CIDR: ClusterIP, NodePort, outside */
	MC_C_TC_PASS_NO_POD,	   /* no pod record, spoofed source, or crossNode off for the pod */
	MC_C_TC_PASS_UNKNOWN_FLOW, /* flow not seen starting between pod IPs here (maybe NATed) */
	MC_C_TC_PASS_FIB,	   /* no route via the overlay device */
	MC_C_TC_PASS_DISABLED,	   /* node switch off, or no pod CIDR configured */
	MC_C_TC_FLOW_RST,	/* flows ended by RST (the RST itself still takes the shortcut) */
	MC_C_TC_PASS_HANDSHAKE, /* SYN, SYN-ACK, handshake ACK: the normal path decides the flow */
	MC_C_TC_CT_ENDED,	/* conntrack entries of shortcut flows ended (MC_FLOW_F_CT_ENDED) */
	MC_C_TC_CT_ABSENT, /* shortcut flows with no conntrack entry found, or no conntrack kfuncs
			    */
	MC_C__N,
};
/* mc_counters' size: room for counters added later without a new layout. */
#define MC_C_MAX 64

#define MC_IS_LOOPBACK(ip_be) ((((const __u8 *)&(ip_be))[0]) == 127)

/*
 * Own key and peer key of an established socket. Inputs exactly as struct
 * bpf_sock_ops gives them: IPv4 addresses in network order, snd_nxt /
 * rcv_nxt in host order. No port: NAT may rewrite the initiator's (above).
 */
static inline void mc_sock_keys(struct mc_sock_key *own, struct mc_sock_key *peer, __u8 side,
				__u32 local_ip, __u32 remote_ip, __u32 snd_nxt, __u32 rcv_nxt,
				__u64 netns_cookie)
{
	__u32 init_ip = side == MC_SIDE_ACTIVE ? local_ip : remote_ip;

	own->init_ip = init_ip;
	own->pad16 = 0;
	own->isn_init = side == MC_SIDE_ACTIVE ? snd_nxt : rcv_nxt;
	own->isn_resp = side == MC_SIDE_ACTIVE ? rcv_nxt : snd_nxt;
	own->scope = MC_IS_LOOPBACK(init_ip) ? netns_cookie : 0;
	own->side = side;
	own->pad = 0;
	*peer = *own;
	peer->side = side == MC_SIDE_ACTIVE ? MC_SIDE_PASSIVE : MC_SIDE_ACTIVE;
}

#endif /* MESHCUT_KERN_USER_H */
