// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * sk_skb: a no-op stream verdict on mc_sockhash.
 *
 * Kernels with commit 929e30f93125 (6.6.128+, 6.12.75+, 6.18.14+, 6.19+) report
 * FIONREAD 0 and miss epoll readiness for bytes that reach a sockhash socket
 * over the normal TCP path when the map has only an sk_msg verdict (nginx, Node,
 * Go stall; grafana/beyla#2941). With a verdict program the kernel moves those
 * bytes into the socket's message queue, where FIONREAD and poll see them.
 * meshcutd attaches this only where its start-up probe sees the regression.
 */
#include "meshcut_kern.h"

SEC("sk_skb")
int mc_sk_skb(struct __sk_buff *skb)
{
	(void)skb;
	return SK_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
