// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * tc on a pod's host-side veth, ingress (= packets leaving the pod). The CNI
 * plugin attaches this pinned program at pod ADD as its own filter.
 *
 * A TCP packet of a known pod-to-pod flow (meshcut_tc.h) skips the bridge and
 * the host's IP stack: to a pod on this node straight into it
 * (bpf_redirect_peer), to a pod on another node straight to the overlay device
 * with the next hop that bpf_fib_lookup finds (the routes, neighbour and FDB
 * entries flannel or the admin set up are the truth; no MAC table of ours).
 * Everything else — ClusterIP, NodePort, outside, UDP, ARP, IPv6, fragments,
 * unknown flows — returns TC_ACT_UNSPEC: the next filter, then the normal path,
 * counted by reason.
 */
#include "meshcut_tc.h"
#include "meshcut_net.h"

SEC("tc")
int mc_tc_veth(struct __sk_buff *skb)
{
	struct bpf_fib_lookup fib = {};
	struct mc_config *cfg = mc_cfg();
	struct mc_pod *src, *dst;
	struct mc_pkt p = {};
	int r;
	long rc;

	if (!mc_tc_on(cfg))
		return mc_tc_pass(MC_C_TC_PASS_DISABLED);
	r = mc_parse(skb, cfg, &p);
	if (r == MC_C_TC_PASS_NOT_POD && p.tcp->syn && !p.tcp->ack)
		mc_flow_new_syn(&p, 0); /* e.g. to a ClusterIP: see mc_flow_owner */
	if (r)
		return mc_tc_pass(r);
	/* The source must be the pod behind this very veth (no spoofing). */
	src = mc_pod_by_ip(p.ip->saddr);
	if (!src || src->host_ifindex != skb->ingress_ifindex || !(src->flags & MC_POD_F_CROSS))
		return mc_tc_pass(MC_C_TC_PASS_NO_POD);
	if (p.tcp->syn && !p.tcp->ack)
		mc_flow_new_syn(&p, 1);
	r = mc_flow_allows(skb, &p);
	if (r)
		return mc_tc_pass(r);

	dst = mc_pod_by_ip(p.ip->daddr);
	if (dst) {
		if (!(dst->flags & MC_POD_F_CROSS) || !dst->host_ifindex)
			return mc_tc_pass(MC_C_TC_PASS_NO_POD);
		mc_count(MC_C_TC_REDIRECT_LOCAL, 1);
		return mc_to_pod(&p, dst);
	}

	fib.family = MC_AF_INET;
	fib.l4_protocol = IPPROTO_TCP;
	fib.tos = p.ip->tos;
	/* tot_len 0: the kernel checks the skb against the egress MTU itself,
	 * GSO-aware (a GSO super-packet is longer than the overlay MTU but is
	 * segmented there; with its tot_len the lookup would say FRAG_NEEDED). */
	fib.tot_len = 0;
	fib.ipv4_src = p.ip->saddr;
	fib.ipv4_dst = p.ip->daddr;
	fib.ifindex = skb->ingress_ifindex;
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if ((rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH) ||
	    (cfg->overlay_ifindex && fib.ifindex != cfg->overlay_ifindex))
		return mc_tc_pass(MC_C_TC_PASS_FIB);
	/* bpf_fib_lookup may have changed nothing in the packet, but the verifier
	 * wants the pointers re-checked after a helper call. */
	r = mc_parse(skb, cfg, &p);
	if (r || mc_dec_ttl(p.ip))
		return mc_tc_pass(r ? r : MC_C_TC_PASS_FIB);
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		mc_count(MC_C_TC_REDIRECT_NEIGH, 1);
		return bpf_redirect_neigh(fib.ifindex, NULL, 0, 0);
	}
	__builtin_memcpy(p.eth->h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(p.eth->h_source, fib.smac, ETH_ALEN);
	mc_count(MC_C_TC_REDIRECT_OVERLAY, 1);
	return bpf_redirect(fib.ifindex, 0);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
