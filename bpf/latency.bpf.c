// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * latency: the latency monitor of `meshcutd trace` (the paper's section 3.3).
 *
 * The paper timestamps sock_sendmsg / sock_recvmsg with kprobes. Kprobes and
 * trampolines (fentry/fexit) are refused on some kernels (DESIGN.md, Kernel
 * facts); the tracepoints sock:sock_send_length and sock:sock_recv_length
 * (Linux 6.3+) fire at exactly those places, in sock_sendmsg_nosec /
 * sock_recvmsg_nosec, with (struct sock *sk, int ret, int flags).
 *
 * Two variants of each hook, one loaded:
 *   tp_btf/...  typed access to sk, socket cookie from the helper (preferred);
 *   raw_tp/...  fallback: sk read with probe reads, cookie from sk->skc_cookie
 *               (0 if nobody asked the kernel for it yet).
 *
 * Records only IPv4 TCP sockets whose netns cookie is in mc_trace_netns
 * (filled by user space: the enrolled pods, or the --netns given) and only
 * calls that moved bytes (ret > 0, no MSG_PEEK). Nothing is pinned: the
 * programs live as long as `meshcutd trace` runs.
 *
 * Kernel types are declared here, minimal and CO-RE relocatable (no vmlinux.h).
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "meshcut_trace.h"
#include "meshcut_net.h"

struct net {
	__u64 net_cookie;
} __attribute__((preserve_access_index));

typedef struct {
	struct net *net;
} possible_net_t;

typedef struct {
	__s64 counter;
} atomic64_t;

struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	possible_net_t skc_net;
	atomic64_t skc_cookie;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
	__u16 sk_protocol;
} __attribute__((preserve_access_index));

/* netns cookie -> 1: the namespaces traced. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MC_TRACE_MAX_NETNS);
	__type(key, __u64);
	__type(value, __u8);
} mc_trace_netns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, MC_TRACE_RINGBUF_BYTES);
} mc_trace_rb SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MC_TS__N);
	__type(key, __u32);
	__type(value, __u64);
} mc_trace_stats SEC(".maps");

static __always_inline void stat_inc(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&mc_trace_stats, &idx);
	if (v)
		*v += 1;
}

static __always_inline int record(void *ctx, struct sock *sk, int ret, int flags, __u8 dir,
				  const int typed)
{
	stat_inc(MC_TS_SEEN);
	if (ret <= 0 || !sk)
		return 0;
	if (dir == MC_TRACE_DIR_RECV && (flags & MC_MSG_PEEK))
		return 0;
	if (BPF_CORE_READ(sk, __sk_common.skc_family) != MC_AF_INET)
		return 0;
	if (BPF_CORE_READ(sk, sk_protocol) != MC_IPPROTO_TCP)
		return 0;
	__u64 netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, net_cookie);
	if (!bpf_map_lookup_elem(&mc_trace_netns, &netns))
		return 0;

	struct mc_trace_event *e = bpf_ringbuf_reserve(&mc_trace_rb, sizeof(*e), 0);
	if (!e) {
		stat_inc(MC_TS_LOST);
		return 0;
	}
	__u64 id = bpf_get_current_pid_tgid();
	e->ts_ns = bpf_ktime_get_ns();
	if (typed)
		e->sock_cookie = bpf_get_socket_cookie(sk);
	else
		e->sock_cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
	e->sock_id = (__u64)(unsigned long)sk;
	e->netns_cookie = netns;
	e->tgid = id >> 32;
	e->pid = (__u32)id;
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->bytes = (__u32)ret;
	e->local_ip = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
	e->remote_ip = BPF_CORE_READ(sk, __sk_common.skc_daddr);
	e->local_port = BPF_CORE_READ(sk, __sk_common.skc_num);
	e->remote_port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	e->dir = dir;
	e->pad[0] = e->pad[1] = e->pad[2] = 0;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	/* No wakeup: on a VM the wakeup's self-IPI costs ~10 us per event; user
	 * space drains the ring every 20 ms instead. */
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
	stat_inc(MC_TS_EVENTS);
	return 0;
}

/* TP_PROTO(struct sock *sk, int ret, int flags) */
SEC("tp_btf/sock_send_length")
int mct_send_btf(__u64 *ctx)
{
	return record(ctx, (struct sock *)ctx[0], (int)ctx[1], (int)ctx[2], MC_TRACE_DIR_SEND, 1);
}

SEC("tp_btf/sock_recv_length")
int mct_recv_btf(__u64 *ctx)
{
	return record(ctx, (struct sock *)ctx[0], (int)ctx[1], (int)ctx[2], MC_TRACE_DIR_RECV, 1);
}

SEC("raw_tp/sock_send_length")
int mct_send_raw(__u64 *ctx)
{
	return record(ctx, (struct sock *)ctx[0], (int)ctx[1], (int)ctx[2], MC_TRACE_DIR_SEND, 0);
}

SEC("raw_tp/sock_recv_length")
int mct_recv_raw(__u64 *ctx)
{
	return record(ctx, (struct sock *)ctx[0], (int)ctx[1], (int)ctx[2], MC_TRACE_DIR_RECV, 0);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
