// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * Egress enforcement: cgroup sock_addr programs see every connect() and every unconnected UDP
 * sendmsg() of the cgroups they are attached to, before any packet is built, and a sock_create
 * program refuses raw and ICMP sockets, whose packets those hooks never see. Returning 0 makes the
 * call fail with EPERM. Attached at the container runtime's parent cgroup, so host processes never
 * run them and new containers inherit them the moment their cgroup exists.
 */
#include "common.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/*
 * Whether cgroup programs may call bpf_send_signal here (6.18 allows it, 6.1 does not): probed at
 * start; when false the call is dead code the verifier never sees, and on_violation: kill denies.
 */
const volatile bool hg_net_can_signal SEC(".rodata.knobs") = true;

#define HG_AF_INET 2
#define HG_AF_INET6 10
#define HG_ALLOW 1
#define HG_DENY 0
#define HG_SOCK_RAW 3
#define HG_IPPROTO_ICMP 1
#define HG_IPPROTO_ICMPV6 58

static __always_inline int port_allowed(struct hg_ports *ports, __u16 port)
{
	for (int i = 0; i < HG_MAX_PORT_RANGES; i++) {
		if (i >= ports->count)
			break;
		if (port >= ports->ranges[i].first && port <= ports->ranges[i].last)
			return 1;
	}
	return 0;
}

static __always_inline int violation(__u8 protocol, __u32 policy_id, __u64 cgroup_id,
				     __u16 family, __u16 port, const __u8 *addr, __u32 addr_len)
{
	struct hg_policy *policy = bpf_map_lookup_elem(&policies, &policy_id);
	int kill = hg_net_can_signal && policy && policy->net_action == HG_NET_KILL;
	struct hg_connect_event *e;
	struct hg_scratch *s;
	__u32 exe_len;
	__u8 action;

	action = answer_violation(policy_id, kill);
	exe_len = resolve_exe();
	s = scratch_space();
	e = reserve_event(sizeof(*e));
	if (e && s) {
		fill_header(&e->hdr, HG_OP_CONNECT, action, policy_id, cgroup_id, s, exe_len);
		e->family = family;
		e->port = port;
		e->protocol = protocol;
		e->at_socket = addr_len == 0;
		e->pad[0] = e->pad[1] = 0;
		__builtin_memset(e->addr, 0, sizeof(e->addr));
		if (addr_len)
			bpf_probe_read_kernel(e->addr, addr_len & 15 ? addr_len & 15 : 16, addr);
		bpf_ringbuf_submit(e, 0);
	} else if (e) {
		bpf_ringbuf_discard(e, 0);
	}
	return action == HG_ACTION_AUDITED ? HG_ALLOW : HG_DENY;
}

static __always_inline int check_v4(struct bpf_sock_addr *ctx, __u32 addr_be)
{
	struct hg_net4_key key = {};
	struct hg_cgroup *tag;
	struct hg_ports *ports;
	__u64 cgroup_id;
	__u16 port;

	tag = tagged_cgroup(&cgroup_id);
	if (!tag || tag->policy_id == HG_POLICY_HOLD)   /* held: nothing of the container runs yet */
		return HG_ALLOW;
	port = bpf_ntohs(ctx->user_port);
	key.prefixlen = 64;
	key.policy_id = tag->policy_id;
	__builtin_memcpy(key.addr, &addr_be, 4);
	ports = bpf_map_lookup_elem(&net4_rules, &key);
	if (ports && port_allowed(ports, port))
		return HG_ALLOW;
	return violation(ctx->protocol, tag->policy_id, cgroup_id, HG_AF_INET, port, key.addr, 4);
}

static __always_inline int check_v6(struct bpf_sock_addr *ctx)
{
	struct hg_net6_key key = {};
	struct hg_cgroup *tag;
	struct hg_ports *ports;
	__u32 words[4];
	__u64 cgroup_id;
	__u16 port;

	words[0] = ctx->user_ip6[0];
	words[1] = ctx->user_ip6[1];
	words[2] = ctx->user_ip6[2];
	words[3] = ctx->user_ip6[3];
	/* ::ffff:a.b.c.d is an IPv4 destination: the IPv4 rules decide. */
	if (words[0] == 0 && words[1] == 0 && words[2] == bpf_htonl(0xffff))
		return check_v4(ctx, words[3]);

	tag = tagged_cgroup(&cgroup_id);
	if (!tag || tag->policy_id == HG_POLICY_HOLD)
		return HG_ALLOW;
	port = bpf_ntohs(ctx->user_port);
	key.prefixlen = 32 + 128;
	key.policy_id = tag->policy_id;
	__builtin_memcpy(key.addr, words, 16);
	ports = bpf_map_lookup_elem(&net6_rules, &key);
	if (ports && port_allowed(ports, port))
		return HG_ALLOW;
	return violation(ctx->protocol, tag->policy_id, cgroup_id, HG_AF_INET6, port, key.addr, 16);
}

SEC("cgroup/connect4")
int hg_connect4(struct bpf_sock_addr *ctx)
{
	return check_v4(ctx, ctx->user_ip4);
}

SEC("cgroup/connect6")
int hg_connect6(struct bpf_sock_addr *ctx)
{
	return check_v6(ctx);
}

SEC("cgroup/sendmsg4")
int hg_sendmsg4(struct bpf_sock_addr *ctx)
{
	return check_v4(ctx, ctx->user_ip4);
}

SEC("cgroup/sendmsg6")
int hg_sendmsg6(struct bpf_sock_addr *ctx)
{
	return check_v6(ctx);
}

/*
 * Raw and ICMP sockets send packets that no connect() or sendmsg() hook sees, so a tagged container
 * may not create them: socket() fails with EPERM (a violation with port 0 and no address).
 */
SEC("cgroup/sock_create")
int hg_sock_create(struct bpf_sock *ctx)
{
	struct hg_cgroup *tag;
	__u64 cgroup_id;
	__u32 protocol = ctx->protocol;

	if (ctx->type != HG_SOCK_RAW && protocol != HG_IPPROTO_ICMP && protocol != HG_IPPROTO_ICMPV6)
		return HG_ALLOW;
	tag = tagged_cgroup(&cgroup_id);
	if (!tag || tag->policy_id == HG_POLICY_HOLD)
		return HG_ALLOW;
	return violation(protocol, tag->policy_id, cgroup_id, ctx->family, 0, NULL, 0);
}
