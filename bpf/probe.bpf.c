// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * probe: what meshcutd's start-up feature probe loads. A pass-only sk_msg and a
 * pass-only SK_SKB verdict on a private sockhash, to see whether this kernel
 * reports FIONREAD for bytes that reach a sockhash socket over the normal path.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} probe_sockhash SEC(".maps");

SEC("sk_msg")
int probe_sk_msg(struct sk_msg_md *msg)
{
	/* Uses the netns cookie so loading also proves the helper is allowed. */
	return bpf_get_netns_cookie(msg) ? SK_PASS : SK_PASS;
}

SEC("sk_skb")
int probe_sk_skb(struct __sk_buff *skb)
{
	(void)skb;
	return SK_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
