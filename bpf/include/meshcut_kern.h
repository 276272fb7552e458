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

#endif /* MESHCUT_KERN_H */
