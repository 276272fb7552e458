/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * meshcut_tc.h — BPF C only. Packet parsing and the flow table shared by the
 * two tc hooks (tc_veth.bpf.c, tc_overlay.bpf.c).
 */
#ifndef MESHCUT_TC_H
#define MESHCUT_TC_H

#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>

#include "meshcut_kern.h"

#define MC_IP_MF 0x2000
#define MC_IP_OFFSET 0x1fff

/* A parsed IPv4/TCP packet; pointers stay valid until a helper changes the packet. */
struct mc_pkt {
	struct ethhdr *eth;
	struct iphdr *ip;
	struct tcphdr *tcp;
};

/* 0 and fills P when SKB is an unfragmented IPv4 TCP packet between two
 * addresses of the pod CIDR; otherwise the counter to charge for passing it. */
static __always_inline int mc_parse(struct __sk_buff *skb, const struct mc_config *cfg, struct mc_pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	struct tcphdr *tcp;

	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return MC_C_TC_PASS_NOT_IP;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->ihl < 5)
		return MC_C_TC_PASS_NOT_IP;
	if (ip->frag_off & bpf_htons(MC_IP_MF | MC_IP_OFFSET))
		return MC_C_TC_PASS_FRAGMENT;
	if (ip->protocol != IPPROTO_TCP)
		return MC_C_TC_PASS_NOT_TCP;
	tcp = (void *)ip + ip->ihl * 4;
	if ((void *)(tcp + 1) > end)
		return MC_C_TC_PASS_NOT_IP;
	p->eth = eth;
	p->ip = ip;
	p->tcp = tcp;
	/* P is filled from here on (the caller may look at a NOT_POD packet). */
	if ((ip->saddr & cfg->pod_cidr_mask) != cfg->pod_cidr || (ip->daddr & cfg->pod_cidr_mask) != cfg->pod_cidr)
		return MC_C_TC_PASS_NOT_POD;
	return 0;
}

/* The node's switch and the pod CIDR it needs. */
static __always_inline int mc_tc_on(const struct mc_config *cfg)
{
	return cfg && cfg->enabled && (cfg->flags & MC_CFG_F_CROSS_NODE) && cfg->pod_cidr;
}

/* A local pod's (ip, port) -> the flow it last started. A new SYN from the
 * same (ip, port) ends that flow: if the new connection goes to a ClusterIP
 * and is DNATed to the same backend (ip, port), its replies must not match the
 * old flow and skip the reverse NAT. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct mc_flow_owner_key);
	__type(value, struct mc_flow_key);
} mc_flow_owner SEC(".maps");

static __always_inline struct mc_config *mc_cfg(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&mc_config, &zero);
}

static __always_inline void mc_flow_key(const struct mc_pkt *p, struct mc_flow_key *k)
{
	__u32 s = p->ip->saddr, d = p->ip->daddr;
	__u16 sp = p->tcp->source, dp = p->tcp->dest;

	if (bpf_ntohl(s) < bpf_ntohl(d) || (s == d && bpf_ntohs(sp) < bpf_ntohs(dp))) {
		k->ip_lo = s, k->port_lo = sp, k->ip_hi = d, k->port_hi = dp;
	} else {
		k->ip_lo = d, k->port_lo = dp, k->ip_hi = s, k->port_hi = sp;
	}
}

/*
 * The flow decision, the same on every hook and in both directions: a SYN
 * (without ACK) between pod IPs starts a flow known to need no translation
 * here; later packets of a known, live flow take the shortcut, FIN and RST
 * included (a flow keeps one path to its end); RST forgets it.
 * Returns 0 to shortcut, else the pass counter.
 */
static __always_inline int mc_flow_allows(const struct mc_pkt *p)
{
	struct mc_flow_key k = {};
	struct mc_flow *f, nf = {};
	__u64 now = bpf_ktime_get_ns();

	mc_flow_key(p, &k);
	if (p->tcp->rst) {
		/* The RST goes the way the flow went: on the normal path the node's
		 * conntrack, which never saw the flow's middle, would call it INVALID
		 * and kube-proxy's KUBE-FORWARD rule would drop it. */
		f = bpf_map_lookup_elem(&mc_flows, &k);
		if (!f || now - f->last_ns > MC_FLOW_IDLE_NS)
			return MC_C_TC_PASS_UNKNOWN_FLOW;
		bpf_map_delete_elem(&mc_flows, &k);
		mc_count(MC_C_TC_FLOW_RST, 1);
		return 0;
	}
	if (p->tcp->syn && !p->tcp->ack) {
		nf.last_ns = now;
		bpf_map_update_elem(&mc_flows, &k, &nf, BPF_ANY);
		return 0;
	}
	f = bpf_map_lookup_elem(&mc_flows, &k);
	if (!f || now - f->last_ns > ((f->flags & MC_FLOW_F_FIN) ? MC_FLOW_CLOSING_IDLE_NS : MC_FLOW_IDLE_NS))
		return MC_C_TC_PASS_UNKNOWN_FLOW;
	if (p->tcp->fin && !(f->flags & MC_FLOW_F_FIN))
		f->flags |= MC_FLOW_F_FIN;
	if (now - f->last_ns > 1000000000ull) /* refresh at most once a second */
		f->last_ns = now;
	return 0;
}

/* A local pod sends a SYN from (ip, port): forget the flow it started before
 * from there; if this one is between pod IPs, remember it as its owner. */
static __always_inline void mc_flow_new_syn(const struct mc_pkt *p, int pod_to_pod)
{
	struct mc_flow_owner_key o = {.ip = p->ip->saddr, .port = p->tcp->source};
	struct mc_flow_key *old = bpf_map_lookup_elem(&mc_flow_owner, &o);
	struct mc_flow_key k = {};
	int old_live = 0;

	if (pod_to_pod)
		mc_flow_key(p, &k);
	if (old) {
		struct mc_flow_key ok = *old;
		struct mc_flow *of;

		/* Only a closing old flow: Linux shares a source port among live
		 * connections to different destinations, and a live one must keep
		 * its path (and its owner entry). (field by field: no memcmp in BPF) */
		if (!pod_to_pod || ok.ip_lo != k.ip_lo || ok.ip_hi != k.ip_hi || ok.port_lo != k.port_lo ||
		    ok.port_hi != k.port_hi) {
			of = bpf_map_lookup_elem(&mc_flows, &ok);
			if (of && (of->flags & MC_FLOW_F_FIN))
				bpf_map_delete_elem(&mc_flows, &ok);
			else if (of)
				old_live = 1;
		}
	}
	if (pod_to_pod && !old_live)
		bpf_map_update_elem(&mc_flow_owner, &o, &k, BPF_ANY);
	else if (old && !old_live)
		bpf_map_delete_elem(&mc_flow_owner, &o);
}

/* What forwarding would do to the IP header (ip_decrease_ttl). */
static __always_inline int mc_dec_ttl(struct iphdr *ip)
{
	__u32 check = ip->check;

	if (ip->ttl <= 1)
		return -1;
	check += bpf_htons(0x0100);
	ip->check = (__u16)(check + (check >= 0xFFFF));
	ip->ttl--;
	return 0;
}

/* The local pod owning IP, or NULL. */
static __always_inline struct mc_pod *mc_pod_by_ip(__u32 ip)
{
	__u64 *cookie = bpf_map_lookup_elem(&mc_pod_ips, &ip);

	return cookie ? bpf_map_lookup_elem(&mc_pods, cookie) : NULL;
}

/* Into pod DST through its host veth's peer, as the bridge would deliver it. */
static __always_inline long mc_to_pod(struct mc_pkt *p, const struct mc_pod *dst)
{
	if (!dst->host_ifindex) /* unknown veth: the caller checked; belt and braces */
		return TC_ACT_OK;
	__builtin_memcpy(p->eth->h_dest, dst->pod_mac, ETH_ALEN);
	__builtin_memcpy(p->eth->h_source, dst->host_mac, ETH_ALEN);
	return bpf_redirect_peer(dst->host_ifindex, 0);
}

#endif /* MESHCUT_TC_H */
