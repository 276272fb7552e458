// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * tc on a pod's host-side veth, ingress (= packets leaving the pod).
 *
 * The CNI plugin attaches this pinned program at pod ADD (its own filter;
 * other filters and qdiscs on the device stay). For now it only counts what
 * it sees and passes everything: the cross-node shortcut (bpf_fib_lookup +
 * redirect to the overlay device) builds on this attachment.
 */
#include <linux/pkt_cls.h>

#include "meshcut_kern.h"

SEC("tc")
int mc_tc_veth(struct __sk_buff *skb)
{
	mc_count(MC_C_TC_VETH_PASS, 1);
	(void)skb;
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
