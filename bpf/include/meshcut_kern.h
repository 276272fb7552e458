/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * meshcut_kern.h — BPF C only. Small inline helpers shared by the hooks.
 */
#ifndef MESHCUT_KERN_H
#define MESHCUT_KERN_H

#include "meshcut_maps.h"

static __always_inline void mc_count(__u32 idx, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&mc_counters, &idx);

	if (v)
		*v += n; /* per-CPU slot: no atomics needed */
}

/* The array entry starts zeroed, i.e. disabled: meshcutd sets enabled = 1 once
 * everything is attached and `meshcutd detach` clears it first. */
static __always_inline int mc_enabled(void)
{
	__u32 zero = 0;
	struct mc_config *c = bpf_map_lookup_elem(&mc_config, &zero);

	return c && c->enabled;
}

/* Whether mc_conns is kept (the kernel refused the iterator, or forced). */
static __always_inline int mc_conns_table(void)
{
	__u32 zero = 0;
	struct mc_config *c = bpf_map_lookup_elem(&mc_config, &zero);

	return c && (c->flags & MC_CFG_F_CONNS_TABLE);
}

/* A socket's own key: its peer's with its own side. */
static __always_inline struct mc_sock_key mc_own_key(const struct mc_sock_state *st)
{
	struct mc_sock_key own = st->peer;

	own.side = st->side;
	return own;
}

/* Copies what sk_msg changes (decision, kind, bytes) into the socket's
 * mc_conns entry, if the table is kept and the entry is this socket's. */
static __always_inline void mc_conns_sync(const struct mc_sock_state *st)
{
	struct mc_sock_key own;
	struct mc_sock_state *t;

	if (!mc_conns_table())
		return;
	own = mc_own_key(st);
	t = bpf_map_lookup_elem(&mc_conns, &own);
	if (!t || t->netns_cookie != st->netns_cookie || t->local_port != st->local_port)
		return;
	t->decision = st->decision;
	t->kind = st->kind;
	t->bytes_redirected = st->bytes_redirected;
	t->bytes_passed = st->bytes_passed;
}

#endif /* MESHCUT_KERN_H */
