/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Structures shared by the BPF programs and the agent.
 *
 * Keep in sync with agent/events.py (events) and agent/compiler.py (map keys and values);
 * tests/test_events.py checks both mirrors against the BTF of the built objects.
 * Fixed-width types and explicit padding only: the Python decoder must see this exact layout.
 */
#ifndef HOSTGUARD_H
#define HOSTGUARD_H

#define HG_PATH_KEY_LEN 252      /* path bytes in an LPM key: 4 (policy) + 252 = 256, the LPM data limit */
#define HG_EVENT_PATH_LEN 256    /* path bytes carried in an event (NUL-terminated, may be truncated) */
#define HG_EVENT_ARGV_LEN 256    /* argv bytes carried in an exec event (NUL-separated) */
#define HG_MAX_PORT_RANGES 16    /* port ranges allowed per destination */
#define HG_PENDING_NAME_LEN 80   /* cgroup leaf name of a container announced before it starts */
#define HG_POLICY_HOLD 0xffffffff /* policy id of a runtime cgroup the agent has not resolved yet */

/* What a policy says to do (value of map `policies`). */
enum hg_mode {
	HG_MODE_ENFORCE = 0,
	HG_MODE_AUDIT = 1,
};

enum hg_net_action {
	HG_NET_DENY = 0,
	HG_NET_KILL = 1,
};

/* Access bits of file rules and of file events. */
enum hg_access {
	HG_ACCESS_READ = 1,
	HG_ACCESS_WRITE = 2,
};

/* Values of map `runtime_parents`. */
enum hg_runtime_parent {
	HG_RUNTIME_PARENT_OWNED = 1,    /* every child is a container (Docker's cgroupfs driver: /docker) */
	HG_RUNTIME_PARENT_SHARED = 2,   /* only "docker-*" children are (systemd driver: system.slice) */
};

/* First byte of every event: user space dispatches on it. */
enum hg_opcode {
	HG_OP_EXEC = 1,
	HG_OP_FILE = 2,
	HG_OP_CONNECT = 3,
	HG_OP_CGROUP = 4,   /* a cgroup was put under a policy by the kernel */
};

enum hg_action {
	HG_ACTION_KILLED = 1,
	HG_ACTION_DENIED = 2,
	HG_ACTION_AUDITED = 3,
	HG_ACTION_HELD = 4,      /* stopped (SIGSTOP) until the agent knows the container's policy */
};

/* Indexes of the per-CPU counter array `stats`. */
enum hg_stat {
	HG_STAT_EVENTS_LOST = 0,   /* ring buffer full: violation enforced, event not delivered */
	HG_STAT_VIOLATIONS = 1,    /* every violation seen, delivered or not */
	HG_STAT_MAX = 2,
};

/* Value of map `policies`, keyed by policy id (__u32). */
struct hg_policy {
	__u32 mode;          /* enum hg_mode */
	__u32 net_action;    /* enum hg_net_action */
};

/* Value of map `cgroups`, keyed by cgroup id (__u64): the policy a tagged cgroup is under. */
struct hg_cgroup {
	__u32 policy_id;
	__u32 flags;         /* reserved, 0 */
};

/* Key of maps `exec_rules` and `file_rules` (LPM tries). prefixlen counts bits from policy_id on. */
struct hg_path_key {
	__u32 prefixlen;
	__u32 policy_id;
	__u8 path[HG_PATH_KEY_LEN];   /* exact rules end with a NUL inside the prefix; "dir/" rules do not */
};

/* Keys of maps `net4_rules` and `net6_rules` (LPM tries). */
struct hg_net4_key {
	__u32 prefixlen;
	__u32 policy_id;
	__u8 addr[4];
};

struct hg_net6_key {
	__u32 prefixlen;
	__u32 policy_id;
	__u8 addr[16];
};

struct hg_port_range {
	__u16 first;
	__u16 last;
};

/* Value of the net tries: ports allowed to that destination (the union of every rule covering it). */
struct hg_ports {
	__u32 count;
	__u32 pad;
	struct hg_port_range ranges[HG_MAX_PORT_RANGES];
};

/* Key of map `pending`: a container's cgroup leaf name, NUL-padded. */
struct hg_pending_key {
	char name[HG_PENDING_NAME_LEN];
};

/* Common head of every event. */
struct hg_event_header {
	__u8 opcode;         /* enum hg_opcode */
	__u8 action;         /* enum hg_action */
	__u8 pad[2];
	__u32 policy_id;
	__u64 ktime_ns;      /* bpf_ktime_get_boot_ns() */
	__u64 cgroup_id;
	__u32 pid;           /* tgid, as seen from the host */
	__u32 tid;
	__u32 ppid;
	__u32 uid;
	char comm[16];
	__u32 exe_len;       /* full length of exe; exe holds at most HG_EVENT_PATH_LEN - 1 bytes */
	__u32 pad2;
	char exe[HG_EVENT_PATH_LEN];
};

struct hg_exec_event {
	struct hg_event_header hdr;
	__u32 path_len;
	__u32 argv_len;      /* bytes copied into argv */
	char path[HG_EVENT_PATH_LEN];
	char argv[HG_EVENT_ARGV_LEN];
};

struct hg_file_event {
	struct hg_event_header hdr;
	__u32 path_len;
	__u32 access;        /* enum hg_access bits the open asked for */
	char path[HG_EVENT_PATH_LEN];
};

struct hg_connect_event {
	struct hg_event_header hdr;
	__u16 family;        /* AF_INET or AF_INET6 (a v4-mapped v6 address is reported as AF_INET) */
	__u16 port;          /* host byte order */
	__u8 protocol;       /* IPPROTO_TCP / IPPROTO_UDP / ICMP / a raw socket's protocol */
	__u8 at_socket;      /* 1: a raw or ICMP socket refused at socket(), no destination yet */
	__u8 pad[2];
	__u8 addr[16];       /* network byte order; first 4 bytes for AF_INET */
};

/* The kernel tagged a new cgroup: from a pending name, or inherited from its tagged parent. */
struct hg_cgroup_event {
	__u8 opcode;         /* HG_OP_CGROUP */
	__u8 inherited;      /* 1: from the parent cgroup, 0: from a pending name */
	__u8 pad[2];
	__u32 policy_id;
	__u64 cgroup_id;
	__u64 parent_id;
	char name[HG_PENDING_NAME_LEN];
};

#endif /* HOSTGUARD_H */
