/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * meshcut_obj.h — included by BOTH the BPF C and the C++ user space: the
 * objectives half's pinned contract (OBJECTIVES.md). Like meshcut_kern_user.h:
 * plain types and pure static inline functions only, no includes of its own.
 *
 * Services and backends are small integers the daemon assigns from the service
 * file (ids are stable while a service exists). A caller class is 0..3 (class 0:
 * callers no rule names). What runs in the kernel:
 *
 *   cgroup/connect4 (mc_connect4)
 *     - a connect to a managed ClusterIP:port (mc_obj_vips) by a process that is
 *       not the sidecar (uid != 1337): admission, the token bucket of (service,
 *       caller class); over the rate the connect fails with ECONNREFUSED. A pod
 *       without a sidecar (no MC_OBJ_POD_F_SIDECAR) is also routed here.
 *     - a connect to an endpoint of a managed service (mc_obj_eps) by the sidecar
 *       (uid 1337) of a pod: routing, the destination becomes the backend drawn
 *       from the (service, class) weight table. Never another service's pod.
 *   sockops / sk_msg: per-request telemetry of the sockets connect4 tagged.
 *
 * Actions are double-buffered: mc_obj_actions holds two halves; user space
 * writes a whole action (every slot of the half) into the half that is not
 * active, then flips mc_obj_ctl's one word (the action's generation and its
 * half). A connect reads ctl, reads its slot, then reads ctl again and uses
 * the slot only if its generation equals both reads (a seqlock: user space
 * never writes the active half, so a slot being written has another
 * generation). Anything missing or stale: the connect proceeds unchanged
 * (fail-open), counted.
 */
#ifndef MESHCUT_OBJ_H
#define MESHCUT_OBJ_H

#define MC_MAP_OBJ_VIPS "mc_obj_vips"
#define MC_MAP_OBJ_EPS "mc_obj_eps"
#define MC_MAP_OBJ_POD "mc_obj_pod"
#define MC_MAP_OBJ_CTL "mc_obj_ctl"
#define MC_MAP_OBJ_ACTIONS "mc_obj_actions"
#define MC_MAP_OBJ_BUCKETS "mc_obj_buckets"
#define MC_MAP_OBJ_STATS "mc_obj_stats"
#define MC_MAP_OBJ_SK "mc_obj_sk"
#define MC_MAP_OBJ_REQ "mc_obj_req"
#define MC_MAP_OBJ_COUNTERS "mc_obj_counters"
#define MC_PROG_CONNECT4 "connect4"
#define MC_LINK_CONNECT4 "connect4_cgroup"
#define MC_PROG_OBJ_INGRESS "obj_ingress"
#define MC_LINK_OBJ_INGRESS "obj_ingress_cg"

#define MC_OBJ_MAX_SERVICES 64
#define MC_OBJ_MAX_BACKENDS 8 /* per service */
#define MC_OBJ_MAX_CLASSES 4
#define MC_OBJ_MAX_VIPS 256  /* ClusterIP:port entries (mc_obj_vips) */
#define MC_OBJ_MAX_EPS 1024  /* endpoint entries (mc_obj_eps) */
#define MC_OBJ_MAX_REQ 65536 /* shortcut sockets being measured (mc_obj_req) */
#define MC_OBJ_SIDECAR_UID 1337u
/* Weights are parts per million; a slot's cumulative weights end at this. */
#define MC_OBJ_WEIGHT_SCALE 1000000u
/* Backend index of a stats row that is about the whole service (e2e, at the
 * caller app's socket) rather than one backend. */
#define MC_OBJ_BACKEND_ALL MC_OBJ_MAX_BACKENDS

/* mc_obj_vips: ClusterIP:port -> service; mc_obj_eps: endpoint -> service and
 * backend index. Keys: IPv4 and port in network order. */
struct mc_obj_addr {
	__u32 ip;
	__u16 port;
	__u16 pad;
};
struct mc_obj_vip {
	__u32 svc;
	__u32 pad;
};
struct mc_obj_ep {
	__u32 svc;
	__u32 backend;
};

/* mc_obj_pod: netns cookie -> the caller pod's class and flags (meshcutd
 * writes it from the service file's class rules and the CNI records). */
#define MC_OBJ_POD_F_SIDECAR                                                 \
	0x1u /* the pod runs a sidecar (uid 1337 owns its upstream connects) \
	      */
struct mc_obj_pod {
	__u32 cls;
	__u32 flags;
};

/* mc_obj_ctl: array, one entry, mmapable: user space flips `word` with one
 * atomic 8-byte store. word = generation << 1 | half; 0: no action (no control). */
struct mc_obj_ctl {
	__u64 word;
	__u64 pad;
};
static inline __u64 mc_obj_ctl_word(__u64 generation, __u32 half)
{
	return generation << 1 | (half & 1);
}

/* One (service, class) slot of an action. mc_obj_actions is an array indexed
 * by mc_obj_action_index(half, svc, cls). */
#define MC_OBJ_ACT_F_ROUTE 0x1u /* draw the backend from be/cum */
#define MC_OBJ_ACT_F_ADMIT 0x2u /* token bucket at rate_milli/burst */
struct mc_obj_action {
	__u64 generation; /* the action this slot belongs to */
	__u64 expires_ns; /* bpf_ktime_get_ns after which the action is void (its TTL) */
	__u32 flags;	  /* MC_OBJ_ACT_F_* */
	__u32 n_backends; /* be[0..n) with cum[] ascending, cum[n-1] == MC_OBJ_WEIGHT_SCALE */
	struct mc_obj_addr be[MC_OBJ_MAX_BACKENDS];
	__u32 be_index[MC_OBJ_MAX_BACKENDS]; /* the backend index of be[i] (stats rows) */
	__u32 cum[MC_OBJ_MAX_BACKENDS];
	__u64 rate_milli; /* admitted connects per 1000 s (rate 2.5/s = 2500) */
	__u64 burst;	  /* bucket depth, connects */
};

/* mc_obj_buckets: array indexed by svc * MC_OBJ_MAX_CLASSES + cls. The bucket
 * of a (service, class) refills at its action's rate; a new generation keeps
 * the tokens (capped at the new burst); a bucket never used starts full. */
#define MC_OBJ_NANO 1000000000ull /* tokens are counted in billionths */
struct mc_obj_bucket {
	struct bpf_spin_lock lock;
	__u32 pad;
	__u64 tokens_nano;
	__u64 last_ns;
	__u64 generation; /* of the action last applied; 0: never used */
};

/* Latency histogram: log-linear over (ns >> 10) (units of 1.024 µs): 16 linear
 * buckets below 16 units, then 16 per power of two up to 2^24 units (17.2 s);
 * the last bucket holds everything longer. A bucket is at most 1/16 (6.25 %)
 * of its lower bound wide, so a percentile read at a bucket's middle is
 * within 3.2 % of the true value from 16 µs up. */
#define MC_OBJ_HIST_SUB 16
#define MC_OBJ_HIST_MAX_LOG 24
#define MC_OBJ_HIST_BUCKETS ((MC_OBJ_HIST_MAX_LOG - 4 + 1) * MC_OBJ_HIST_SUB + 1) /* 337 */
#define MC_OBJ_HIST_SHIFT 10

static inline __u32 mc_obj_log2(__u64 v) /* floor(log2(v)), v > 0; no clz in BPF */
{
	__u32 r = 0;

	if (v >> 32) {
		v >>= 32;
		r += 32;
	}
	if (v >> 16) {
		v >>= 16;
		r += 16;
	}
	if (v >> 8) {
		v >>= 8;
		r += 8;
	}
	if (v >> 4) {
		v >>= 4;
		r += 4;
	}
	if (v >> 2) {
		v >>= 2;
		r += 2;
	}
	if (v >> 1)
		r += 1;
	return r;
}

static inline __u32 mc_obj_hist_bucket(__u64 ns)
{
	__u64 u = ns >> MC_OBJ_HIST_SHIFT;
	__u32 e;

	if (u < MC_OBJ_HIST_SUB)
		return (__u32)u;
	e = mc_obj_log2(u);
	if (e >= MC_OBJ_HIST_MAX_LOG)
		return MC_OBJ_HIST_BUCKETS - 1;
	return (e - 3) * MC_OBJ_HIST_SUB + (__u32)((u >> (e - 4)) & (MC_OBJ_HIST_SUB - 1));
}

/* Lower bound (ns) of bucket b; bucket MC_OBJ_HIST_BUCKETS - 1 is unbounded above. */
static inline __u64 mc_obj_hist_lower_ns(__u32 b)
{
	__u32 e;

	if (b < MC_OBJ_HIST_SUB)
		return (__u64)b << MC_OBJ_HIST_SHIFT;
	if (b >= MC_OBJ_HIST_BUCKETS - 1)
		return (1ull << MC_OBJ_HIST_MAX_LOG) << MC_OBJ_HIST_SHIFT;
	e = b / MC_OBJ_HIST_SUB + 3;
	return ((1ull << e) + (((__u64)(b % MC_OBJ_HIST_SUB)) << (e - 4))) << MC_OBJ_HIST_SHIFT;
}

/* mc_obj_stats: array indexed by mc_obj_stat_index(svc, backend, cls);
 * backend MC_OBJ_BACKEND_ALL is the service as its callers see it. Counters
 * only grow (user space takes differences per window); updated with atomic
 * adds (one array shared by all CPUs). */
struct mc_obj_stat {
	__u64 offered;	   /* connects to the ClusterIP (ALL row) / routed to the backend */
	__u64 admitted;	   /* connects the token bucket let through (ALL row) */
	__u64 blocked;	   /* connects refused (ECONNREFUSED) */
	__u64 conns;	   /* connections established and measured */
	__u64 requests;	   /* requests sent (a send on an idle connection) */
	__u64 completed;   /* requests answered (first response byte) */
	__u64 unanswered;  /* connections closed while a request was outstanding */
	__u64 req_sum_ns;  /* sum of request latencies */
	__u64 conn_sum_ns; /* sum of connection durations (connect -> end) */
	__u64 conn_done;   /* connections whose duration was measured */
	__u32 req_hist[MC_OBJ_HIST_BUCKETS];  /* first request byte sent -> first response byte */
	__u32 conn_hist[MC_OBJ_HIST_BUCKETS]; /* connect() -> the first FIN (either way) */
};

static inline __u32 mc_obj_stat_index(__u32 svc, __u32 backend, __u32 cls)
{
	return (svc * (MC_OBJ_MAX_BACKENDS + 1) + backend) * MC_OBJ_MAX_CLASSES + cls;
}
#define MC_OBJ_STAT_ROWS (MC_OBJ_MAX_SERVICES * (MC_OBJ_MAX_BACKENDS + 1) * MC_OBJ_MAX_CLASSES)

static inline __u32 mc_obj_action_index(__u32 half, __u32 svc, __u32 cls)
{
	return (half * MC_OBJ_MAX_SERVICES + svc) * MC_OBJ_MAX_CLASSES + cls;
}
#define MC_OBJ_ACTION_SLOTS (2 * MC_OBJ_MAX_SERVICES * MC_OBJ_MAX_CLASSES)

/* A measured socket (mc_obj_sk: socket storage; mc_obj_req: the same for a
 * shortcut socket, keyed by its own mc_sock_key, where its peer's sk_msg finds
 * it). A request: the first bytes sent on a connection, or the first bytes sent
 * after a response began arriving (sequential HTTP/1.1); its latency ends at the
 * first byte of the response. */
#define MC_OBJ_ROLE_E2E 1u     /* the caller app's socket to a ClusterIP */
#define MC_OBJ_ROLE_BACKEND 2u /* the sidecar's (or sidecar-less app's) socket to a backend */
#define MC_OBJ_ST_IDLE 0u
#define MC_OBJ_ST_WAITING 1u /* a request sent, no response byte yet */
struct mc_obj_sock {
	__u32 row;   /* mc_obj_stat_index of the socket's (service, backend, class) */
	__u32 row2;  /* a second row (the backend's, for a routed E2E socket), or MC_OBJ_STAT_ROWS:
			none */
	__u32 role;  /* MC_OBJ_ROLE_* */
	__u32 state; /* MC_OBJ_ST_* */
	__u64 connect_ns; /* bpf_ktime_get_ns at connect() */
	__u64 req_ns;	  /* start of the outstanding request */
	__u32 flags;	  /* MC_OBJ_SK_F_* */
	__u32 pad;
};
#define MC_OBJ_SK_F_ENDED 0x1u	/* connection duration recorded */
#define MC_OBJ_SK_F_IN_REQ 0x2u /* a shortcut socket: its request state is its mc_obj_req entry */
#define MC_OBJ_SK_F_PKT_CB 0x4u /* normal path: sockops sees its segments */

/* mc_obj_counters: array of __u64 (atomic adds) indexed by enum mc_obj_counter. */
enum mc_obj_counter {
	MC_OC_CONNECT_SEEN = 0, /* connects to a managed address */
	MC_OC_ROUTED,		/* destinations rewritten */
	MC_OC_ROUTE_SAME,	/* drawn backend was the one asked for */
	MC_OC_ADMITTED,
	MC_OC_BLOCKED,
	MC_OC_NO_ACTION,   /* managed connect, no action in force: fail-open */
	MC_OC_TTL_EXPIRED, /* action older than its TTL: fail-open */
	MC_OC_SLOT_EMPTY,  /* action without a slot for (service, class) */
	MC_OC_TORN,	   /* action changed while read: fail-open */
	MC_OC_NO_BUCKET,
	MC_OC_APP_IN_MESHED_POD, /* an app's connect to an endpoint in a sidecar pod: never routed
				  */
	MC_OC_TAG_FAILED,	 /* socket storage for telemetry could not be made */
	MC_OC_REQ_FULL,		 /* mc_obj_req full: a shortcut socket not measured */
	MC_OC__N,
};
#define MC_OC_MAX 32

#endif /* MESHCUT_OBJ_H */
