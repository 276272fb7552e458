// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * cgroup/connect4: the objectives actuators (meshcut_obj.h, OBJECTIVES.md).
 *
 *  - admission: a caller app's connect to a managed ClusterIP:port takes a
 *    token from its (service, class) bucket, or fails with ECONNREFUSED;
 *  - routing: the sidecar's upstream connect to an endpoint of a managed
 *    service (or a sidecar-less pod's connect to the ClusterIP) goes to the
 *    backend drawn from the (service, class) weight table, always a backend
 *    of the same service.
 *
 * Never the app's connect to a pod IP inside a meshed pod: Envoy would see a
 * pod IP as the original destination and take PassthroughCluster. Everything
 * this program cannot decide (no action, stale action, torn read, no bucket)
 * lets the connect through unchanged: fail-open, counted. It also tags the
 * socket (mc_obj_sk) for the request accounting in sockops and sk_msg.
 */
#include "meshcut_kern.h"
#include "meshcut_obj_maps.h"

#define MC_ECONNREFUSED 111
#define MC_SOCK_STREAM 1

struct mc_obj_pick {
	__u32 flags;
	__u32 found; /* a backend was drawn */
	struct mc_obj_addr be;
	__u32 be_index;
	__u64 rate_milli;
	__u64 burst;
	__u64 generation;
};

static __always_inline __u64 mc_ctl_word(void)
{
	__u32 zero = 0;
	struct mc_obj_ctl *c = bpf_map_lookup_elem(&mc_obj_ctl, &zero);

	return c ? *(volatile __u64 *)&c->word : 0;
}

/*
 * Reads the (service, class) slot of the action in force into P: 0 if there
 * is one and it was read whole, else the counter that says why not. A seqlock
 * on the control word: user space writes only the half not in force, so a
 * slot read while it is being written has another generation, or the word
 * moved on.
 */
static __always_inline int mc_read_action(__u32 svc, __u32 cls, struct mc_obj_pick *p)
{
	__u64 w = mc_ctl_word(), gen = w >> 1;
	struct mc_obj_action *a;
	__u32 idx, n, r;

	if (!gen)
		return MC_OC_NO_ACTION;
	idx = mc_obj_action_index((__u32)(w & 1), svc, cls);
	a = bpf_map_lookup_elem(&mc_obj_actions, &idx);
	if (!a)
		return MC_OC_NO_ACTION;
	if (*(volatile __u64 *)&a->generation != gen)
		return MC_OC_TORN;
	if (bpf_ktime_get_ns() > a->expires_ns)
		return MC_OC_TTL_EXPIRED;
	p->flags = a->flags;
	p->rate_milli = a->rate_milli;
	p->burst = a->burst;
	p->generation = gen;
	p->found = 0;
	n = a->n_backends;
	if ((p->flags & MC_OBJ_ACT_F_ROUTE) && n > 0) {
		r = bpf_get_prandom_u32() % MC_OBJ_WEIGHT_SCALE;
		for (__u32 i = 0; i < MC_OBJ_MAX_BACKENDS; i++) {
			if (i >= n)
				break;
			if (r < a->cum[i]) {
				p->be = a->be[i];
				p->be_index = a->be_index[i];
				p->found = 1;
				break;
			}
		}
	}
	asm volatile("" ::: "memory");
	if (*(volatile __u64 *)&a->generation != gen || mc_ctl_word() != w)
		return MC_OC_TORN;
	if (!p->flags)
		return MC_OC_SLOT_EMPTY;
	return 0;
}

/* One token from the (service, class) bucket: 1 admitted, 0 refused. */
static __always_inline int mc_bucket_take(__u32 svc, __u32 cls, const struct mc_obj_pick *p)
{
	__u32 idx = svc * MC_OBJ_MAX_CLASSES + cls;
	struct mc_obj_bucket *b = bpf_map_lookup_elem(&mc_obj_buckets, &idx);
	__u64 now = bpf_ktime_get_ns(), cap, tokens, elapsed;
	int ok;

	if (!b) {
		mc_obj_count(MC_OC_NO_BUCKET);
		return 1;
	}
	cap = p->burst * MC_OBJ_NANO;
	bpf_spin_lock(&b->lock);
	tokens = b->tokens_nano;
	if (!b->generation) {
		tokens = cap; /* never used: starts full */
	} else {
		elapsed = now > b->last_ns ? now - b->last_ns : 0;
		/* tokens += elapsed * rate (per ns, in billionths: rate_milli / 1000) */
		if (p->rate_milli && elapsed > (~0ull - tokens) / p->rate_milli * 1000 / 2)
			tokens = cap;
		else
			tokens += elapsed * p->rate_milli / 1000;
	}
	if (tokens > cap)
		tokens = cap;
	ok = tokens >= MC_OBJ_NANO;
	if (ok)
		tokens -= MC_OBJ_NANO;
	b->tokens_nano = tokens;
	b->last_ns = now;
	b->generation = p->generation;
	bpf_spin_unlock(&b->lock);
	return ok;
}

static __always_inline void mc_tag(struct bpf_sock_addr *ctx, __u32 role, __u32 row, __u32 row2)
{
	struct mc_obj_sock *o;

	if (!ctx->sk)
		return;
	o = bpf_sk_storage_get(&mc_obj_sk, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!o) {
		mc_obj_count(MC_OC_TAG_FAILED);
		return;
	}
	o->row = row;
	o->row2 = row2;
	o->role = role;
	o->state = MC_OBJ_ST_IDLE;
	o->connect_ns = bpf_ktime_get_ns();
	o->req_ns = 0;
	o->flags = 0;
}

static __always_inline void mc_rewrite(struct bpf_sock_addr *ctx, const struct mc_obj_pick *p,
				       const struct mc_obj_addr *dst)
{
	if (p->be.ip == dst->ip && p->be.port == dst->port) {
		mc_obj_count(MC_OC_ROUTE_SAME);
		return;
	}
	ctx->user_ip4 = p->be.ip;
	ctx->user_port = p->be.port;
	mc_obj_count(MC_OC_ROUTED);
}

SEC("cgroup/connect4")
int mc_connect4(struct bpf_sock_addr *ctx)
{
	struct mc_obj_addr dst = {};
	struct mc_obj_pick p = {};
	struct mc_obj_vip *vip;
	struct mc_obj_ep *ep;
	struct mc_obj_pod *pod;
	__u64 netns;
	__u32 cls = 0, sidecar_pod, is_sidecar, row, row2 = MC_OBJ_STAT_ROWS, svc, why;

	if (ctx->type != MC_SOCK_STREAM || !mc_objectives_on())
		return 1;
	dst.ip = ctx->user_ip4;
	dst.port = (__u16)ctx->user_port;
	netns = bpf_get_netns_cookie(ctx);
	pod = bpf_map_lookup_elem(&mc_obj_pod, &netns);
	if (pod && pod->cls < MC_OBJ_MAX_CLASSES)
		cls = pod->cls;
	sidecar_pod = pod && (pod->flags & MC_OBJ_POD_F_SIDECAR);
	is_sidecar = sidecar_pod && (__u32)bpf_get_current_uid_gid() == MC_OBJ_SIDECAR_UID;

	vip = bpf_map_lookup_elem(&mc_obj_vips, &dst);
	if (vip) {
		if (is_sidecar)
			return 1; /* Envoy connects to endpoints, not ClusterIPs */
		svc = vip->svc;
		if (svc >= MC_OBJ_MAX_SERVICES)
			return 1;
		mc_obj_count(MC_OC_CONNECT_SEEN);
		row = mc_obj_stat_index(svc, MC_OBJ_BACKEND_ALL, cls);
		mc_obj_add(row, MC_OF_OFFERED);
		why = mc_read_action(svc, cls, &p);
		if (why) {
			mc_obj_count(why);
		} else {
			if ((p.flags & MC_OBJ_ACT_F_ADMIT) && !mc_bucket_take(svc, cls, &p)) {
				mc_obj_add(row, MC_OF_BLOCKED);
				mc_obj_count(MC_OC_BLOCKED);
				bpf_set_retval(-MC_ECONNREFUSED);
				return 0;
			}
			/* A pod without a sidecar is routed at its own connect. */
			if (!sidecar_pod && p.found && p.be_index < MC_OBJ_MAX_BACKENDS) {
				mc_rewrite(ctx, &p, &dst);
				row2 = mc_obj_stat_index(svc, p.be_index, cls);
				mc_obj_add(row2, MC_OF_OFFERED);
			}
		}
		mc_obj_add(row, MC_OF_ADMITTED);
		mc_obj_count(MC_OC_ADMITTED);
		mc_tag(ctx, MC_OBJ_ROLE_E2E, row, row2);
		return 1;
	}

	ep = bpf_map_lookup_elem(&mc_obj_eps, &dst);
	if (!ep || ep->svc >= MC_OBJ_MAX_SERVICES || ep->backend >= MC_OBJ_MAX_BACKENDS)
		return 1;
	if (sidecar_pod && !is_sidecar) {
		mc_obj_count(MC_OC_APP_IN_MESHED_POD);
		return 1;
	}
	svc = ep->svc;
	mc_obj_count(MC_OC_CONNECT_SEEN);
	row = mc_obj_stat_index(svc, ep->backend, cls);
	why = mc_read_action(svc, cls, &p);
	if (why)
		mc_obj_count(why);
	else if (p.found && p.be_index < MC_OBJ_MAX_BACKENDS) {
		mc_rewrite(ctx, &p, &dst);
		row = mc_obj_stat_index(svc, p.be_index, cls);
	}
	mc_obj_add(row, MC_OF_OFFERED);
	mc_tag(ctx, MC_OBJ_ROLE_BACKEND, row, MC_OBJ_STAT_ROWS);
	return 1;
}

/*
 * cgroup_skb/ingress: a data segment arriving for a tagged socket on the
 * normal path is the response to its outstanding request. Never drops: the
 * verdict is always 1.
 */
SEC("cgroup_skb/ingress")
int mc_obj_ingress(struct __sk_buff *skb)
{
	struct bpf_sock *sk = skb->sk;
	struct mc_obj_sock *o;
	__u8 b;
	__u32 ihl, doff;

	if (!sk || skb->protocol != bpf_htons(0x0800 /* ETH_P_IP */) || !mc_objectives_on())
		return 1;
	sk = bpf_sk_fullsock(sk);
	if (!sk || sk->protocol != 6 /* IPPROTO_TCP */)
		return 1;
	o = bpf_sk_storage_get(&mc_obj_sk, sk, 0, 0);
	if (!o || !(o->flags & MC_OBJ_SK_F_PKT_CB) || o->state != MC_OBJ_ST_WAITING)
		return 1;
	if (bpf_skb_load_bytes(skb, 0, &b, 1))
		return 1;
	ihl = (b & 0xf) * 4;
	if (bpf_skb_load_bytes(skb, ihl + 12, &b, 1))
		return 1;
	doff = (b >> 4) * 4;
	if (skb->len > ihl + doff)
		mc_obj_on_recv(o);
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
