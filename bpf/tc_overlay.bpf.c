// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * tc on the overlay device (flannel.1, vxlan.calico), ingress: the inner
 * frames after decapsulation. meshcutd attaches it (its own filter).
 *
 * A TCP packet of a known pod-to-pod flow for a pod on this node goes straight
 * into the pod (bpf_redirect_peer), with the MACs the bridge would have
 * written, skipping the host's IP stack and the bridge. The first SYN of a
 * flow arriving here already has the pod's IP as destination: nothing on this
 * node translates it, so the flow is known from then on (its handshake still
 * takes the normal path: mc_flow_allows). Everything else is TC_ACT_UNSPEC
 * (the next filter, then the normal path), counted by reason.
 */
#include "meshcut_tc.h"

SEC("tc")
int mc_tc_overlay(struct __sk_buff *skb)
{
	struct mc_config *cfg = mc_cfg();
	struct mc_pkt p = {};
	struct mc_pod *dst;
	int r;

	if (!mc_tc_on(cfg))
		return mc_tc_pass(MC_C_TC_PASS_DISABLED);
	r = mc_parse(skb, cfg, &p);
	if (r)
		return mc_tc_pass(r);
	dst = mc_pod_by_ip(p.ip->daddr);
	/* From the overlay, the source is never one of our pods (spoofed). */
	if (!dst || !(dst->flags & MC_POD_F_CROSS) || !dst->host_ifindex ||
	    mc_pod_by_ip(p.ip->saddr))
		return mc_tc_pass(MC_C_TC_PASS_NO_POD);
	r = mc_flow_allows(skb, &p);
	if (r)
		return mc_tc_pass(r);
	if (mc_dec_ttl(p.ip))
		return mc_tc_pass(MC_C_TC_PASS_FIB);
	mc_count(MC_C_TC_REDIRECT_PEER, 1);
	return mc_to_pod(&p, dst);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
