// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * sk_msg: sends the bytes of an enrolled socket straight into its peer's
 * receive queue (BPF_F_INGRESS), skipping TCP/IP below the socket layer.
 *
 * The decision is made at the first send of each socket (= each direction) and
 * kept (invariant 2). REDIRECT needs the peer in the map at that first send;
 * if the first bytes went the normal path, the direction stays normal, since
 * the receiver reads its redirect queue before its TCP queue and mixing the two
 * would reorder. REDIRECT may turn PASS (peer gone, detach): order-safe, the
 * receiver drains the redirect queue first. PASS never turns REDIRECT.
 */
#include "meshcut_kern.h"
#include "meshcut_obj_maps.h"

/* Decides where one message goes and updates ST; always returns SK_PASS (a
 * redirected message is SK_PASS too: the helper already queued it). */
static __always_inline int mc_decide(struct sk_msg_md *msg, struct mc_sock_state *st)
{
	struct mc_sock_key peer;
	__u64 size = msg->size;

	if (st->decision == MC_DECISION_PASS) {
		st->bytes_passed += size;
		mc_count(MC_C_MSG_PASS_STICKY, 1);
		mc_count(MC_C_BYTES_PASS_STICKY, size);
		return SK_PASS;
	}
	if (!mc_enabled()) {
		st->decision = MC_DECISION_PASS;
		mc_count(MC_C_MSG_PASS_DISABLED, 1);
		return SK_PASS;
	}
	peer = st->peer;
	if (st->decision == MC_DECISION_UNDECIDED) {
		/* An active socket learns the true kind from its passive peer (left
		 * at the peer's establishment), then the pod's switch for that kind
		 * decides. */
		if (st->side == MC_SIDE_ACTIVE) {
			struct mc_sock_key own = peer;
			__u32 *kind;

			own.side = MC_SIDE_ACTIVE;
			kind = bpf_map_lookup_elem(&mc_pair_kind, &own);
			if (kind) {
				st->kind = *kind;
				bpf_map_delete_elem(&mc_pair_kind, &own);
			}
		}
		if (!(st->pod_flags &
		      (st->kind == MC_KIND_NODE ? MC_POD_F_NODE : MC_POD_F_INTRA))) {
			st->decision = MC_DECISION_PASS;
			st->bytes_passed += size;
			mc_count(MC_C_MSG_PASS_DISABLED, 1);
			return SK_PASS;
		}
	}
	/* On a miss the helper returns SK_DROP: never return its value as is. */
	if (bpf_msg_redirect_hash(msg, &mc_sockhash, &peer, BPF_F_INGRESS) == SK_PASS) {
		if (st->decision == MC_DECISION_UNDECIDED) {
			st->decision = MC_DECISION_REDIRECT;
			mc_count(MC_C_PAIRS_REDIRECTED, 1);
		}
		st->bytes_redirected += size;
		if (st->kind == MC_KIND_NODE) {
			mc_count(MC_C_MSG_REDIRECT_NODE, 1);
			mc_count(MC_C_BYTES_REDIRECT_NODE, size);
		} else {
			mc_count(MC_C_MSG_REDIRECT_INTRA, 1);
			mc_count(MC_C_BYTES_REDIRECT_INTRA, size);
		}
		return SK_PASS;
	}
	st->bytes_passed += size;
	if (st->decision == MC_DECISION_UNDECIDED) {
		mc_count(MC_C_MSG_PASS_NO_PEER, 1);
		mc_count(MC_C_BYTES_PASS_NO_PEER, size);
	} else {
		mc_count(MC_C_MSG_PASS_PEER_GONE, 1);
	}
	st->decision = MC_DECISION_PASS;
	return SK_PASS;
}

/* Request accounting (meshcut_obj.h): a measured (active) socket's send is a
 * request; its peer's send into it is the response. Both find the state in
 * mc_obj_req under the active socket's key, whatever the decision. */
static __always_inline void mc_obj_msg(struct bpf_sock *sk, const struct mc_sock_state *st)
{
	struct mc_sock_key own;
	struct mc_obj_sock *o, *r;

	if (st->side == MC_SIDE_ACTIVE) {
		o = bpf_sk_storage_get(&mc_obj_sk, sk, 0, 0);
		if (!o || !(o->flags & MC_OBJ_SK_F_IN_REQ))
			return;
		own = mc_own_key(st);
		r = bpf_map_lookup_elem(&mc_obj_req, &own);
		if (r)
			mc_obj_on_send(r);
		return;
	}
	r = bpf_map_lookup_elem(&mc_obj_req, &st->peer);
	if (r)
		mc_obj_on_recv(r);
}

SEC("sk_msg")
int mc_sk_msg(struct sk_msg_md *msg)
{
	struct mc_sock_state *st;
	struct bpf_sock *sk = msg->sk;
	int verdict;

	if (!sk)
		return SK_PASS;
	st = bpf_sk_storage_get(&mc_sk_state, sk, 0, 0);
	if (!st) {
		mc_count(MC_C_MSG_NO_STATE, 1);
		return SK_PASS;
	}
	if (mc_objectives_on())
		mc_obj_msg(sk, st);
	verdict = mc_decide(msg, st);
	mc_conns_sync(st);
	return verdict;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
