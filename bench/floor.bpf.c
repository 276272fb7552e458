// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * floor.bpf.c — the simplest possible socket redirect, used by bench/ only.
 *
 * It is the "floor" that meshcut's redirect is compared with: what a sockops +
 * sk_msg shortcut costs when it does nothing else (no enrollment, no netns in
 * the key, no sticky decision). Every established IPv4 socket of the cgroup it
 * is attached to goes into a sockhash keyed by its 4-tuple; sk_msg looks up the
 * swapped 4-tuple (the peer socket on this host) and redirects into its ingress
 * queue. Not safe for production (no netns in the key, no ordering guarantee
 * if the first bytes took the normal path); fine for a ping-pong benchmark in
 * a private cgroup.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#ifndef AF_INET
#define AF_INET 2
#endif

/* Both ports in host byte order, widened to 32 bits so the key has no padding. */
struct floor_key {
	__u32 local_ip4;  /* network byte order */
	__u32 remote_ip4; /* network byte order */
	__u32 local_port; /* host byte order */
	__u32 remote_port;
};

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, struct floor_key);
	__type(value, __u64);
} floor_sockhash SEC(".maps");

/* Counters, so that the bench can prove the redirect happened. */
enum {
	FLOOR_CNT_INSERTED = 0, /* sockets put in the sockhash */
	FLOOR_CNT_REDIRECT_MSGS,
	FLOOR_CNT_REDIRECT_BYTES,
	FLOOR_CNT_MISS_MSGS, /* peer not in the map: normal path */
	FLOOR_CNT_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FLOOR_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} floor_counters SEC(".maps");

static __always_inline void floor_count(__u32 idx, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&floor_counters, &idx);

	if (v)
		*v += n; /* per-CPU slot: no atomics needed */
}

SEC("sockops")
int floor_sockops(struct bpf_sock_ops *skops)
{
	struct floor_key key = {};

	if (skops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB &&
	    skops->op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
		return 1;
	if (skops->family != AF_INET)
		return 1;

	key.local_ip4 = skops->local_ip4;
	key.remote_ip4 = skops->remote_ip4;
	key.local_port = skops->local_port;
	/* remote_port holds the network-order port in its upper 16 bits on
	 * little endian: ntohl gives the host-order port on every arch. */
	key.remote_port = bpf_ntohl(skops->remote_port);

	if (bpf_sock_hash_update(skops, &floor_sockhash, &key, BPF_NOEXIST) == 0)
		floor_count(FLOOR_CNT_INSERTED, 1);
	return 1;
}

SEC("sk_msg")
int floor_sk_msg(struct sk_msg_md *msg)
{
	struct floor_key peer = {};
	__u64 len = msg->size;

	if (msg->family != AF_INET)
		return SK_PASS;

	/* The peer socket sees this connection's tuple mirrored. */
	peer.local_ip4 = msg->remote_ip4;
	peer.remote_ip4 = msg->local_ip4;
	peer.local_port = bpf_ntohl(msg->remote_port);
	peer.remote_port = msg->local_port;

	/* On a miss the helper returns SK_DROP: never return its value. */
	if (bpf_msg_redirect_hash(msg, &floor_sockhash, &peer, BPF_F_INGRESS) == SK_PASS) {
		floor_count(FLOOR_CNT_REDIRECT_MSGS, 1);
		floor_count(FLOOR_CNT_REDIRECT_BYTES, len);
	} else {
		floor_count(FLOOR_CNT_MISS_MSGS, 1);
	}
	return SK_PASS;
}

/* No-op stream verdict. Kernels with commit 929e30f93125 (6.18.14+ here)
 * report FIONREAD 0 / no epoll readiness for bytes that reach a sockhash
 * socket over the normal path when the map has only an sk_msg verdict;
 * attaching an SK_SKB verdict that passes everything restores both. */
SEC("sk_skb") /* libbpf 1.1 does not know "sk_skb/verdict"; attached as BPF_SK_SKB_VERDICT */
int floor_sk_skb(struct __sk_buff *skb)
{
	return SK_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
