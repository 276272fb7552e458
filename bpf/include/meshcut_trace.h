/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * meshcut_trace.h — the latency monitor's record, shared by bpf/latency.bpf.c
 * and `meshcutd trace` (pinned-maps-daemon/trace.cpp, trace_analysis.cpp). Not part of the pinned
 * contract: the trace object is loaded, attached and destroyed by one
 * `meshcutd trace` run and pins nothing.
 *
 * No includes of its own: the includer provides __u8..__u64.
 */
#ifndef MESHCUT_TRACE_H
#define MESHCUT_TRACE_H

#define MC_TRACE_DIR_SEND 0
#define MC_TRACE_DIR_RECV 1

#define MC_TRACE_MAX_NETNS 16384
#define MC_TRACE_RINGBUF_BYTES (8u << 20)

/* One sock_sendmsg / sock_recvmsg that moved bytes (ret > 0) on an IPv4 TCP
 * socket whose network namespace is traced. Example: {ts 1234, tgid 77,
 * comm "python3", uid 1337, RECV, 64 B, 10.0.0.2:15006 <- 10.0.0.1:41234}. */
struct mc_trace_event {
	__u64 ts_ns;	   /* bpf_ktime_get_ns (CLOCK_MONOTONIC) */
	__u64 sock_cookie; /* socket cookie (0 when the fallback hook cannot read it) */
	__u64 sock_id;	   /* the kernel's socket, as an opaque id (never printed) */
	__u64 netns_cookie;
	__u32 tgid;
	__u32 pid; /* thread id */
	__u32 uid;
	__u32 bytes;
	__u32 local_ip;	   /* network order */
	__u32 remote_ip;   /* network order */
	__u16 local_port;  /* host order */
	__u16 remote_port; /* host order */
	__u8 dir;	   /* MC_TRACE_DIR_* */
	__u8 pad[3];
	char comm[16];
};

/* Index of the counters in the per-CPU array mc_trace_stats. */
enum mc_trace_stat {
	MC_TS_EVENTS = 0, /* events written to the ring buffer */
	MC_TS_LOST = 1,	  /* ring buffer full: event dropped */
	MC_TS_SEEN = 2,	  /* hook runs (all sockets, before filtering) */
	MC_TS__N = 3,
};

#endif /* MESHCUT_TRACE_H */
