// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * sockops: enrolls the established TCP sockets of meshed pods in mc_sockhash.
 *
 * Runs for every TCP socket in the cgroup meshcutd attached it to. A socket is
 * enrolled only if its network namespace is a registered pod (mc_pods), and it
 * gets a socket-local state holding its peer's key and the sticky decision that
 * sk_msg reads. Anything unexpected leaves the socket alone: normal path.
 */
#include "meshcut_kern.h"
#include "meshcut_net.h"
#include "meshcut_obj_maps.h"

/* Minimum RTO (µs) for sockets whose peer is on this node (the kernel's is
 * 200 ms); 0 keeps the kernel's. Set by meshcutd before load (--local-rto-min-us). */
const volatile int mc_local_rto_min_us = 5000;

/* IPv4-mapped IPv6 (::ffff:a.b.c.d): a dual-stack socket talking IPv4. Its
 * local_ip4/remote_ip4 hold the IPv4 addresses. */
static __always_inline int mc_v4mapped(struct bpf_sock_ops *skops)
{
	return skops->remote_ip6[0] == 0 && skops->remote_ip6[1] == 0 &&
	       skops->remote_ip6[2] == bpf_htonl(0x0000ffff);
}

static __always_inline int mc_is_pod_ip(__u32 ip, const struct mc_pod *pod)
{
	for (int i = 0; i < MC_POD_MAX_IPS; i++)
		if (pod->ip4[i] && pod->ip4[i] == ip)
			return 1;
	return 0;
}

/*
 * Where the peer of this socket lives. "Local" addresses (loopback, the pod's
 * own IPs) mean the peer is in the same netns; another enrolled pod's IP means
 * another pod on this node. An active socket towards anything else may still
 * be REDIRECTed by Istio's rules to the pod's own sidecar: INTRA. A passive
 * socket from anything else has no peer on this node: -1.
 */
static __always_inline int mc_kind_of(__u8 side, __u32 remote_ip, const struct mc_pod *pod,
				      int *local_peer)
{
	*local_peer = 1;
	if (MC_IS_LOOPBACK(remote_ip) || mc_is_pod_ip(remote_ip, pod))
		return MC_KIND_INTRA;
	if (bpf_map_lookup_elem(&mc_pod_ips, &remote_ip))
		return MC_KIND_NODE;
	*local_peer = 0;
	return side == MC_SIDE_ACTIVE ? MC_KIND_INTRA : -1;
}

/* The socket's copy in mc_conns (only while the table is kept). No state
 * callback removes it at close (that would be seven more runs of this program
 * per connection): meshcutd sweeps the entries of sockets that left the
 * sockhash. BPF_NOEXIST: never replace another socket's entry. */
static __always_inline void mc_conns_add(struct mc_sock_key *own, struct mc_sock_state *st)
{
	if (mc_conns_table())
		bpf_map_update_elem(&mc_conns, own, st, BPF_NOEXIST);
}

static __always_inline struct mc_syn_key mc_syn_key_of(__u32 init_ip, __u16 init_port, __u64 netns)
{
	struct mc_syn_key k = {};

	k.scope = MC_IS_LOOPBACK(init_ip) ? netns : 0;
	k.init_ip = init_ip;
	k.init_port = init_port;
	return k;
}

/* One less pending SYN from an address; 0 if none was pending. */
static __always_inline int mc_syn_count_take(struct mc_syn_key *ip_key)
{
	__u64 *n = bpf_map_lookup_elem(&mc_syn_seen, ip_key);
	__u64 old;

	if (!n)
		return 0;
	old = *n;
	return old && __sync_val_compare_and_swap(n, old, old - 1) == old;
}

/*
 * A SYN reached a listener in this cgroup (called for its request socket;
 * not under SYN cookies, whose request has no listener, so no program runs
 * for it and the initiator is enrolled only if its destination is local by
 * address): if the listener's netns is an enrolled pod, its
 * socket will join the map at establishment, so the initiator may too. The
 * SYN is processed before the SYN-ACK leaves, so the mark is there before the
 * initiator's establishment, whatever REDIRECT or a ClusterIP did to the
 * destination. Two marks: the initiator's address and port, and a count of
 * pending SYNs per address (port 0) for when conntrack rewrote the port.
 */
static __always_inline void mc_syn_seen_mark(struct bpf_sock_ops *skops)
{
	struct mc_syn_key k, ip_key;
	__u64 netns = bpf_get_netns_cookie(skops);
	__u64 one = 1, *n;

	if (!bpf_map_lookup_elem(&mc_pods, &netns))
		return;
	k = mc_syn_key_of(skops->remote_ip4, (__u16)bpf_ntohl(skops->remote_port), netns);
	ip_key = mc_syn_key_of(skops->remote_ip4, 0, netns);
	bpf_map_update_elem(&mc_syn_seen, &k, &one, BPF_ANY);
	if (bpf_map_update_elem(&mc_syn_seen, &ip_key, &one, BPF_NOEXIST) == 0)
		return;
	n = bpf_map_lookup_elem(&mc_syn_seen, &ip_key);
	if (n)
		__sync_fetch_and_add(n, 1);
}

/* Whether a listener on this node saw this active socket's SYN (see above).
 * Without the port mark, a pending SYN from the same address stands in for
 * it: two connections from one address racing through their handshakes may
 * swap marks, which at worst enrols a socket that finds no peer (its first
 * send then stays on the normal path). */
static __always_inline int mc_syn_take(__u32 local_ip, __u16 local_port, __u64 netns)
{
	struct mc_syn_key k = mc_syn_key_of(local_ip, local_port, netns);
	struct mc_syn_key ip_key = mc_syn_key_of(local_ip, 0, netns);

	if (bpf_map_lookup_elem(&mc_syn_seen, &k)) {
		bpf_map_delete_elem(&mc_syn_seen, &k);
		mc_syn_count_take(&ip_key);
		return 1;
	}
	return mc_syn_count_take(&ip_key);
}

/* Enrols an established socket; 1 if it entered the sockhash (OWN: its key). */
static __always_inline int mc_established(struct bpf_sock_ops *skops, __u8 side,
					  struct mc_sock_key *own_out)
{
	struct mc_sock_key own = {}, peer = {};
	struct mc_sock_state *st;
	struct mc_pod *pod;
	struct bpf_sock *sk;
	__u64 netns;
	int local_peer = 0;
	int syn_seen = 0;
	int kind;

	netns = bpf_get_netns_cookie(skops);
	pod = bpf_map_lookup_elem(&mc_pods, &netns);
	if (!pod) {
		mc_count(MC_C_SOCK_NOT_ENROLLED, 1);
		return 0;
	}
	/* An active socket towards an address that is not local (loopback, a
	 * pod of this node) has a peer here only if Istio's REDIRECT or a
	 * ClusterIP led its SYN to an enrolled listener, which marked it. Without
	 * the mark its peer is on another node, in an unenrolled pod or a host
	 * process: enrolling it would gain nothing and move every byte it
	 * receives onto the socket-map receive path, where FIONREAD and epoll
	 * break without an SK_SKB verdict and, with one, this kernel was seen to
	 * corrupt the byte stream under load (DESIGN.md). Taken first, so that
	 * no skip below leaves the mark behind. */
	if (side == MC_SIDE_ACTIVE)
		syn_seen = mc_syn_take(skops->local_ip4, (__u16)skops->local_port, netns);
	if (skops->family != MC_AF_INET && !(skops->family == MC_AF_INET6 && mc_v4mapped(skops))) {
		mc_count(MC_C_SOCK_SKIP_FAMILY, 1);
		return 0;
	}
	/* Bytes that crossed before establishment (TCP Fast Open) took the normal
	 * path; redirecting what follows could reorder them. The SYN itself counts
	 * one in bytes_acked. */
	if (skops->bytes_received || skops->bytes_acked > 1) {
		mc_count(MC_C_SOCK_SKIP_EARLY_DATA, 1);
		return 0;
	}
	kind = mc_kind_of(side, skops->remote_ip4, pod, &local_peer);
	if (side == MC_SIDE_ACTIVE && !local_peer) {
		if (syn_seen)
			local_peer = 1;
		else
			kind = -1;
	}
	if (kind < 0) {
		mc_count(MC_C_SOCK_SKIP_REMOTE, 1);
		return 0;
	}
	/* A passive socket knows its kind; an active one only guesses it (a
	 * connect() to another pod's IP may be REDIRECTed to its own sidecar), so
	 * either switch lets it in and sk_msg checks the true kind's switch. */
	if (!mc_enabled() ||
	    !(pod->flags & (side == MC_SIDE_ACTIVE  ? (MC_POD_F_INTRA | MC_POD_F_NODE)
			    : kind == MC_KIND_INTRA ? MC_POD_F_INTRA
						    : MC_POD_F_NODE))) {
		mc_count(MC_C_SOCK_SKIP_DISABLED, 1);
		return 0;
	}

	sk = skops->sk;
	if (!sk)
		return 0;
	st = bpf_sk_storage_get(&mc_sk_state, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st) {
		mc_count(MC_C_SOCK_NO_STORAGE, 1);
		return 0;
	}
	mc_sock_keys(&own, &peer, side, skops->local_ip4, skops->remote_ip4, skops->snd_nxt,
		     skops->rcv_nxt, netns);
	st->peer = peer;
	st->kind = kind;
	st->side = side;
	st->pod_flags = (__u8)pod->flags;
	st->decision = MC_DECISION_UNDECIDED;
	st->netns_cookie = netns;
	st->local_ip = skops->local_ip4;
	st->remote_ip = skops->remote_ip4;
	st->local_port = (__u16)skops->local_port;
	st->remote_port = (__u16)bpf_ntohl(skops->remote_port);
	st->bytes_redirected = 0;
	st->bytes_passed = 0;

	/* BPF_NOEXIST: a clash (full map, or a key already taken) must never
	 * replace another connection's socket. */
	if (bpf_sock_hash_update(skops, &mc_sockhash, &own, BPF_NOEXIST)) {
		st->decision = MC_DECISION_PASS;
		mc_count(MC_C_SOCK_ADD_FAILED, 1);
		return 0;
	}
	*own_out = own;
	mc_conns_add(&own, st);
	mc_count(side == MC_SIDE_ACTIVE ? MC_C_SOCK_ADDED_ACTIVE : MC_C_SOCK_ADDED_PASSIVE, 1);

	/* The FIN still travels TCP. Redirected bytes waiting in the receiver's
	 * queue count against its memory, so the FIN can be dropped
	 * (TcpExtTCPBacklogDrop) and comes again only after the 200 ms minimum
	 * RTO: a 200 ms tail on a few percent of transfers that end at EOF. When
	 * the peer is surely on this node (RTT of microseconds) a short minimum
	 * RTO makes that retransmission cheap. Not for an active socket that may
	 * go off the node (its destination is not local). */
	if (local_peer && mc_local_rto_min_us > 0) {
		int rto_min_us = mc_local_rto_min_us;

		if (bpf_setsockopt(skops, MC_SOL_TCP, TCP_BPF_RTO_MIN, &rto_min_us,
				   sizeof(rto_min_us)))
			mc_count(MC_C_SOCK_RTO_FAILED, 1);
	}

	/* The passive side knows the true kind; the active side only guessed it
	 * (a connect() to another pod's IP may be REDIRECTed to its own sidecar).
	 * Leave it for the active peer's first send (sockops may look a socket up
	 * in the sockhash but may not release it, so it can't tell it directly). */
	if (side == MC_SIDE_PASSIVE) {
		__u32 k = kind;

		bpf_map_update_elem(&mc_pair_kind, &peer, &k, BPF_ANY);
	}
	return 1;
}

/* The objectives tag of the socket of SKOPS (connect4 put it there), or NULL. */
static __always_inline struct mc_obj_sock *mc_obj_sk_of(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;

	if (!sk)
		return 0;
	return bpf_sk_storage_get(&mc_obj_sk, sk, 0, 0);
}

/*
 * Request accounting of the sockets connect4 tagged (meshcut_obj.h). A socket
 * in the sockhash is measured by sk_msg (its sends, and its peer's sends into
 * it), through its mc_obj_req entry; any other from its segments: a data
 * segment leaving it is a send (here), one arriving a receive (mc_obj_ingress).
 * The callbacks are switched on for tagged sockets only.
 */
static __always_inline void mc_obj_established(struct bpf_sock_ops *skops, int in_map,
					       struct mc_sock_key *own)
{
	struct mc_obj_sock *o = mc_obj_sk_of(skops);
	__u32 flags = BPF_SOCK_OPS_STATE_CB_FLAG;

	if (!o)
		return;
	mc_obj_add(o->row, MC_OF_CONNS);
	mc_obj_add(o->row2, MC_OF_CONNS);
	if (in_map) {
		if (bpf_map_update_elem(&mc_obj_req, own, o, BPF_ANY) == 0)
			o->flags |= MC_OBJ_SK_F_IN_REQ;
		else
			mc_obj_count(MC_OC_REQ_FULL);
	}
	if (!(o->flags & MC_OBJ_SK_F_IN_REQ)) {
		o->flags |= MC_OBJ_SK_F_PKT_CB;
		flags |=
			BPF_SOCK_OPS_PARSE_ALL_HDR_OPT_CB_FLAG | BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG;
	}
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | flags);
}

/* A segment leaving a tagged normal-path socket: with payload, a send. (Its
 * receives are seen by mc_obj_ingress, connect4.bpf.c: the kernel's fast path
 * for arriving data runs no header-option callback.) */
static __always_inline void mc_obj_segment_out(struct bpf_sock_ops *skops)
{
	struct mc_obj_sock *o = mc_obj_sk_of(skops);

	/* Before the TCP header is pushed: skb_len is the payload. */
	if (o && (o->flags & MC_OBJ_SK_F_PKT_CB) && skops->skb_len)
		mc_obj_on_send(o);
}

/* A tagged socket's state changed: its duration when it leaves ESTABLISHED,
 * and at close an outstanding request counts as unanswered. */
static __always_inline void mc_obj_state(struct bpf_sock_ops *skops)
{
	__u32 old = skops->args[0], new = skops->args[1];
	struct mc_obj_sock *o = mc_obj_sk_of(skops), *r = 0;
	struct mc_sock_state *st;
	struct mc_sock_key own;
	struct bpf_sock *sk = skops->sk;

	if (!o || !sk)
		return;
	if (old == BPF_TCP_ESTABLISHED)
		mc_obj_on_end(o);
	if (new != BPF_TCP_CLOSE)
		return;
	if (o->flags & MC_OBJ_SK_F_IN_REQ) {
		st = bpf_sk_storage_get(&mc_sk_state, sk, 0, 0);
		if (st) {
			own = mc_own_key(st);
			r = bpf_map_lookup_elem(&mc_obj_req, &own);
		}
	}
	if ((r ? r->state : o->state) == MC_OBJ_ST_WAITING) {
		mc_obj_add(o->row, MC_OF_UNANSWERED);
		mc_obj_add(o->row2, MC_OF_UNANSWERED);
	}
	if (r)
		bpf_map_delete_elem(&mc_obj_req, &own);
}

SEC("sockops")
int mc_sockops(struct bpf_sock_ops *skops)
{
	struct mc_sock_key own = {};
	int in_map;

	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		in_map = mc_established(skops, MC_SIDE_ACTIVE, &own);
		if (mc_objectives_on())
			mc_obj_established(skops, in_map, &own);
		break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		mc_established(skops, MC_SIDE_PASSIVE, &own);
		break;
	case BPF_SOCK_OPS_HDR_OPT_LEN_CB:
		mc_obj_segment_out(skops);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		mc_obj_state(skops);
		break;
	case BPF_SOCK_OPS_RWND_INIT:
		/* Called for the request socket of a SYN a listener answers and
		 * for a connecting socket (a full one): only the listener's
		 * request socket marks a SYN. */
		if (!skops->is_fullsock)
			mc_syn_seen_mark(skops);
		break;
	}
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
