// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Test fixture: another agent's tc filter. Drops TCP to port 9 (discard) and
 * otherwise returns TC_ACT_UNSPEC, so the next filter on the device (meshcut's)
 * runs. test_tc_coexist.py puts it before meshcut's filter. Built with
 * MC_FOREIGN_AFTER (mc_foreign_tc_after) it drops TCP and UDP to port 10
 * instead, and test_tc_coexist.py puts it after meshcut's: it sees only what
 * meshcut passes on.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#ifdef MC_FOREIGN_AFTER
#define DROP_PORT 10
#define DROP_UDP 1
#else
#define DROP_PORT 9
#define DROP_UDP 0
#endif

SEC("tc")
int foreign(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct tcphdr *tcp = (void *)(ip + 1);
	struct udphdr *udp = (void *)(ip + 1);

	if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5)
		return TC_ACT_UNSPEC;
	if (ip->protocol == IPPROTO_TCP && (void *)(tcp + 1) <= end)
		return tcp->dest == bpf_htons(DROP_PORT) ? TC_ACT_SHOT : TC_ACT_UNSPEC;
	if (DROP_UDP && ip->protocol == IPPROTO_UDP && (void *)(udp + 1) <= end)
		return udp->dest == bpf_htons(DROP_PORT) ? TC_ACT_SHOT : TC_ACT_UNSPEC;
	return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
