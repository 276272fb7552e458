/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * meshcut_maps.h — BPF C only. The maps shared by the socket-shortcut hooks.
 *
 * Every hook object (sockops, sk_msg, sk_skb) includes this file, so each object
 * declares the same maps; meshcutd pins them under <pin-root>/maps/ and every
 * object reuses the pinned map (libbpf checks type, key, value, max_entries).
 * Changing a definition here changes the pinned contract: bump MC_LAYOUT_VERSION.
 */
#ifndef MESHCUT_MAPS_H
#define MESHCUT_MAPS_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "meshcut_kern_user.h"

/* Enrolled sockets; meshcutd sets max_entries (--max-sockets) before load. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, MC_DEFAULT_MAX_SOCKETS);
	__type(key, struct mc_sock_key);
	__type(value, __u64);
} mc_sockhash SEC(".maps");

#include "meshcut_sk_state.h" /* mc_sk_state */

/* Own sockhash key -> copy of the socket's state, kept only while
 * MC_CFG_F_CONNS_TABLE is set (see meshcut_kern_user.h); meshcutd sets
 * max_entries to the sockhash's. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MC_DEFAULT_MAX_SOCKETS);
	__type(key, struct mc_sock_key);
	__type(value, struct mc_sock_state);
} mc_conns SEC(".maps");

/* netns cookie -> pod record. Example row: 0x2d4 -> {10.244.1.5, INTRA|NODE}. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MC_MAX_PODS);
	__type(key, __u64);
	__type(value, struct mc_pod);
} mc_pods SEC(".maps");

/* pod IPv4 (network order) -> netns cookie, for the pods on this node. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MC_MAX_PODS *MC_POD_MAX_IPS);
	__type(key, __u32);
	__type(value, __u64);
} mc_pod_ips SEC(".maps");

/* Active socket's key -> true enum mc_kind, left by its passive peer at
 * establishment, taken by the active socket's first redirected send. LRU:
 * entries of active sockets that never send age out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MC_MAX_PAIR_KINDS);
	__type(key, struct mc_sock_key);
	__type(value, __u32);
} mc_pair_kind SEC(".maps");

/* Initiators whose SYN reached an enrolled listener on this node: left by the
 * listener's request socket, taken by the initiator at establishment. Only an
 * active socket found here has a peer that can join the sockhash (see
 * sockops.bpf.c). LRU: SYNs from sockets that never enrol age out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MC_MAX_PAIR_KINDS);
	__type(key, struct mc_syn_key);
	__type(value, __u64); /* 1 for a port mark; pending SYNs for an address (port 0) */
} mc_syn_seen SEC(".maps");

/* CNI attachment records (user space only; see meshcut_kern_user.h). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MC_MAX_PODS);
	__type(key, struct mc_cni_key);
	__type(value, struct mc_cni_pod);
} mc_cni_pods SEC(".maps");

/* TCP flows the tc shortcut may carry (see struct mc_flow_key). LRU: flows
 * that end without FIN/RST seen age out; an entry older than
 * MC_FLOW_IDLE_NS counts as absent. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MC_MAX_FLOWS);
	__type(key, struct mc_flow_key);
	__type(value, struct mc_flow);
} mc_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MC_C_MAX);
	__type(key, __u32);
	__type(value, __u64);
} mc_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mc_config);
} mc_config SEC(".maps");

/* CNI plugin statistics (user space only; see enum mc_cni_stat). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MC_S__N);
	__type(key, __u32);
	__type(value, __u64);
} mc_cni_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mc_meta);
} mc_meta SEC(".maps");

#endif /* MESHCUT_MAPS_H */
