/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * meshcut_obj_maps.h — BPF C only. The objectives maps (meshcut_obj.h) and the
 * request accounting that connect4, sockops and sk_msg share. Included after
 * meshcut_kern.h.
 */
#ifndef MESHCUT_OBJ_MAPS_H
#define MESHCUT_OBJ_MAPS_H

#include "meshcut_obj.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MC_OBJ_MAX_VIPS);
	__type(key, struct mc_obj_addr);
	__type(value, struct mc_obj_vip);
} mc_obj_vips SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MC_OBJ_MAX_EPS);
	__type(key, struct mc_obj_addr);
	__type(value, struct mc_obj_ep);
} mc_obj_eps SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MC_MAX_PODS);
	__type(key, __u64);
	__type(value, struct mc_obj_pod);
} mc_obj_pod SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mc_obj_ctl);
} mc_obj_ctl SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MC_OBJ_ACTION_SLOTS);
	__type(key, __u32);
	__type(value, struct mc_obj_action);
} mc_obj_actions SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MC_OBJ_MAX_SERVICES *MC_OBJ_MAX_CLASSES);
	__type(key, __u32);
	__type(value, struct mc_obj_bucket);
} mc_obj_buckets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MC_OBJ_STAT_ROWS);
	__type(key, __u32);
	__type(value, struct mc_obj_stat);
} mc_obj_stats SEC(".maps");

/* Sockets connect4 tagged for measurement; freed with the socket. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct mc_obj_sock);
} mc_obj_sk SEC(".maps");

/* A tagged socket in the sockhash, by its own key: its peer's sk_msg, which
 * carries the response into it, finds its request state here. Removed at
 * close (sockops' state callback runs for tagged sockets only). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MC_OBJ_MAX_REQ);
	__type(key, struct mc_sock_key);
	__type(value, struct mc_obj_sock);
} mc_obj_req SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MC_OC_MAX);
	__type(key, __u32);
	__type(value, __u64);
} mc_obj_counters SEC(".maps");

static __always_inline void mc_obj_count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&mc_obj_counters, &idx);

	if (v)
		__sync_fetch_and_add(v, 1);
}

static __always_inline int mc_objectives_on(void)
{
	__u32 zero = 0;
	struct mc_config *c = bpf_map_lookup_elem(&mc_config, &zero);

	return c && (c->flags & MC_CFG_F_OBJECTIVES);
}

static __always_inline struct mc_obj_stat *mc_obj_row(__u32 row)
{
	if (row >= MC_OBJ_STAT_ROWS)
		return 0;
	return bpf_map_lookup_elem(&mc_obj_stats, &row);
}

enum mc_obj_field {
	MC_OF_OFFERED,
	MC_OF_ADMITTED,
	MC_OF_BLOCKED,
	MC_OF_CONNS,
	MC_OF_REQUESTS,
	MC_OF_UNANSWERED,
};

static __always_inline void mc_obj_add(__u32 row, enum mc_obj_field f)
{
	struct mc_obj_stat *s = mc_obj_row(row);

	if (!s)
		return;
	switch (f) {
	case MC_OF_OFFERED:
		__sync_fetch_and_add(&s->offered, 1);
		break;
	case MC_OF_ADMITTED:
		__sync_fetch_and_add(&s->admitted, 1);
		break;
	case MC_OF_BLOCKED:
		__sync_fetch_and_add(&s->blocked, 1);
		break;
	case MC_OF_CONNS:
		__sync_fetch_and_add(&s->conns, 1);
		break;
	case MC_OF_REQUESTS:
		__sync_fetch_and_add(&s->requests, 1);
		break;
	case MC_OF_UNANSWERED:
		__sync_fetch_and_add(&s->unanswered, 1);
		break;
	}
}

/* A latency into a row: request (conn = 0) or connection duration (conn = 1). */
static __always_inline void mc_obj_latency(__u32 row, __u64 ns, int conn)
{
	struct mc_obj_stat *s = mc_obj_row(row);
	__u32 b = mc_obj_hist_bucket(ns);

	if (!s || b >= MC_OBJ_HIST_BUCKETS)
		return;
	if (conn) {
		__sync_fetch_and_add(&s->conn_done, 1);
		__sync_fetch_and_add(&s->conn_sum_ns, ns);
		__sync_fetch_and_add(&s->conn_hist[b], 1);
	} else {
		__sync_fetch_and_add(&s->completed, 1);
		__sync_fetch_and_add(&s->req_sum_ns, ns);
		__sync_fetch_and_add(&s->req_hist[b], 1);
	}
}

/* Request accounting on a measured socket's state (see struct mc_obj_sock):
 * the socket sent bytes, or bytes for it arrived. Requests on one connection
 * are sequential, so the state needs no atomics. */
static __always_inline void mc_obj_on_send(struct mc_obj_sock *o)
{
	if (o->state != MC_OBJ_ST_IDLE)
		return;
	o->state = MC_OBJ_ST_WAITING;
	o->req_ns = bpf_ktime_get_ns();
	mc_obj_add(o->row, MC_OF_REQUESTS);
	mc_obj_add(o->row2, MC_OF_REQUESTS);
}

static __always_inline void mc_obj_on_recv(struct mc_obj_sock *o)
{
	__u64 ns;

	if (o->state != MC_OBJ_ST_WAITING)
		return;
	o->state = MC_OBJ_ST_IDLE;
	ns = bpf_ktime_get_ns() - o->req_ns;
	mc_obj_latency(o->row, ns, 0);
	mc_obj_latency(o->row2, ns, 0);
}

/* The connection stopped being established (a FIN either way): its duration. */
static __always_inline void mc_obj_on_end(struct mc_obj_sock *o)
{
	__u64 ns;

	if (o->flags & MC_OBJ_SK_F_ENDED)
		return;
	o->flags |= MC_OBJ_SK_F_ENDED;
	ns = bpf_ktime_get_ns() - o->connect_ns;
	mc_obj_latency(o->row, ns, 1);
	mc_obj_latency(o->row2, ns, 1);
}

#endif /* MESHCUT_OBJ_MAPS_H */
