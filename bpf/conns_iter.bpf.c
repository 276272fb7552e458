// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * conns_iter: what `meshcutd conns` reads. A BPF iterator over mc_sk_state
 * writes every live socket's state (tuple, netns, peer key, decision, bytes)
 * to the reader; loaded and attached only for the duration of one listing.
 * Kernel types are declared minimally (CO-RE relocates them): no vmlinux.h.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "meshcut_sk_state.h"

struct seq_file;
struct sock;
struct bpf_iter_meta {
	struct seq_file *seq;
} __attribute__((preserve_access_index));
struct bpf_iter__bpf_sk_storage_map {
	struct bpf_iter_meta *meta;
	struct sock *sk;
	void *value;
} __attribute__((preserve_access_index));

SEC("iter/bpf_sk_storage_map")
int mc_conns_iter(struct bpf_iter__bpf_sk_storage_map *ctx)
{
	struct mc_sock_state *st = ctx->value;

	if (!ctx->sk || !st)
		return 0;
	bpf_seq_write(ctx->meta->seq, st, sizeof(*st));
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
