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
static __always_inline int mc_parse(struct __sk_buff *skb, const struct mc_config *cfg,
				    struct mc_pkt *p)
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
	if ((ip->saddr & cfg->pod_cidr_mask) != cfg->pod_cidr ||
	    (ip->daddr & cfg->pod_cidr_mask) != cfg->pod_cidr)
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
	__uint(max_entries, MC_MAX_FLOWS);
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

/* Nothing for meshcut to do with this packet: count why, and let the next
 * filter on the device run (TC_ACT_UNSPEC; TC_ACT_OK would end the chain in
 * direct-action mode and hide the packet from every filter after ours). With
 * no filter after ours the packet goes on as with TC_ACT_OK. */
static __always_inline int mc_tc_pass(__u32 reason)
{
	mc_count(reason, 1);
	return TC_ACT_UNSPEC;
}

#ifndef MC_NO_CT
/* Conntrack kfuncs (Linux 6.0+ with nf_conntrack's BTF). The loader falls back
 * to a build with MC_NO_CT where the kernel lacks them; see mc_ct_end. */
/* A struct, not a forward declaration: libbpf matches a kfunc's prototype by
 * kind, and the kernel's nf_conn is a struct (its fields are never read). */
struct nf_conn {
	int unused;
};
struct bpf_ct_opts___mc {
	__s32 netns_id;
	__s32 error;
	__u8 l4proto;
	__u8 dir;
	__u8 reserved[2];
};
extern struct nf_conn *bpf_skb_ct_lookup(struct __sk_buff *skb, struct bpf_sock_tuple *tuple,
					 __u32 tuple__sz, struct bpf_ct_opts___mc *opts,
					 __u32 opts__sz) __ksym;
extern void bpf_ct_release(struct nf_conn *ct) __ksym;
extern int bpf_ct_change_timeout(struct nf_conn *ct, __u32 timeout) __ksym;
#endif

/* Ends this node's conntrack entry of a flow now on the shortcut (see
 * MC_FLOW_F_CT_ENDED): its timeout becomes MC_CT_END_MS. Either direction's
 * tuple finds the entry. Returns 1 if an entry was found. */
static __always_inline int mc_ct_end(struct __sk_buff *skb, const struct mc_pkt *p)
{
#ifndef MC_NO_CT
	struct bpf_ct_opts___mc o = {.netns_id = -1 /* BPF_F_CURRENT_NETNS */,
				     .l4proto = IPPROTO_TCP};
	struct bpf_sock_tuple t = {};
	struct nf_conn *ct;

	t.ipv4.saddr = p->ip->saddr;
	t.ipv4.daddr = p->ip->daddr;
	t.ipv4.sport = p->tcp->source;
	t.ipv4.dport = p->tcp->dest;
	ct = bpf_skb_ct_lookup(skb, &t, sizeof(t.ipv4), &o, sizeof(o));
	if (!ct)
		return 0;
	bpf_ct_change_timeout(ct, MC_CT_END_MS);
	bpf_ct_release(ct);
	return 1;
#else
	return 0;
#endif
}

/*
 * The flow decision, the same on every hook and in both directions. A SYN
 * (without ACK) between pod IPs starts a flow known to need no translation
 * here. Its handshake -- SYN, SYN-ACK and the ACK after it -- takes the normal
 * path, so netfilter on every node decides the connection (NetworkPolicy,
 * kube-proxy) and conntrack knows it: a flow that a rule rejects never
 * completes its handshake and never reaches the shortcut. Packets of an
 * established flow take the shortcut, FIN and RST included (a flow keeps one
 * path to its end: conntrack's entry of it was ended, and a FIN or RST without
 * one is INVALID); RST forgets it. Returns 0 to shortcut, else the pass counter.
 */
static __always_inline int mc_flow_allows(struct __sk_buff *skb, const struct mc_pkt *p)
{
	struct mc_flow_key k = {};
	struct mc_flow *f, nf = {};
	__u64 now = bpf_ktime_get_ns();

	mc_flow_key(p, &k);
	if (p->tcp->syn && !p->tcp->ack) {
		nf.last_ns = now;
		nf.flags = MC_FLOW_F_SYN_SENT;
		bpf_map_update_elem(&mc_flows, &k, &nf, BPF_ANY);
		return MC_C_TC_PASS_HANDSHAKE;
	}
	f = bpf_map_lookup_elem(&mc_flows, &k);
	if (!f || now - f->last_ns >
			  ((f->flags & MC_FLOW_F_FIN) ? MC_FLOW_CLOSING_IDLE_NS : MC_FLOW_IDLE_NS))
		return MC_C_TC_PASS_UNKNOWN_FLOW;
	if (f->flags & (MC_FLOW_F_SYN_SENT | MC_FLOW_F_SYN_ACKED)) {
		if (p->tcp->rst) {
			bpf_map_delete_elem(&mc_flows, &k);
		} else if (p->tcp->syn) {
			if (f->flags & MC_FLOW_F_SYN_SENT)
				f->flags = MC_FLOW_F_SYN_ACKED;
		} else if (f->flags & MC_FLOW_F_SYN_ACKED) {
			/* The ACK that completes the handshake (or the first data
			 * after it, if reordered): still the normal path, then
			 * established. */
			f->flags = 0;
			f->last_ns = now;
		}
		return MC_C_TC_PASS_HANDSHAKE;
	}
	if (!(f->flags & MC_FLOW_F_CT_ENDED)) {
		f->flags |= MC_FLOW_F_CT_ENDED;
		mc_count(mc_ct_end(skb, p) ? MC_C_TC_CT_ENDED : MC_C_TC_CT_ABSENT, 1);
	}
	if (p->tcp->rst) {
		bpf_map_delete_elem(&mc_flows, &k);
		mc_count(MC_C_TC_FLOW_RST, 1);
		return 0;
	}
	if (p->tcp->fin && !(f->flags & MC_FLOW_F_FIN))
		f->flags |= MC_FLOW_F_FIN;
	if (now - f->last_ns > MC_NSEC_PER_SEC) /* refresh at most once a second */
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
		if (!pod_to_pod || ok.ip_lo != k.ip_lo || ok.ip_hi != k.ip_hi ||
		    ok.port_lo != k.port_lo || ok.port_hi != k.port_hi) {
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
		return TC_ACT_UNSPEC;
	__builtin_memcpy(p->eth->h_dest, dst->pod_mac, ETH_ALEN);
	__builtin_memcpy(p->eth->h_source, dst->host_mac, ETH_ALEN);
	return bpf_redirect_peer(dst->host_ifindex, 0);
}

#endif /* MESHCUT_TC_H */
