/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * meshcut_sk_state.h — BPF C only. The per-socket state map, in the one place
 * both its writers (sockops, sk_msg: meshcut_maps.h) and its reader (the
 * conns iterator, which includes no other map) take it from. Value layout:
 * struct mc_sock_state (meshcut_kern_user.h).
 */
#ifndef MESHCUT_SK_STATE_H
#define MESHCUT_SK_STATE_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "meshcut_kern_user.h"

/* Per-socket state, freed by the kernel with the socket. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct mc_sock_state);
} mc_sk_state SEC(".maps");

#endif /* MESHCUT_SK_STATE_H */
