/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Maps shared by every hostguard object. Each object declares all of them; the loader creates them
 * once (with the first object it loads) and hands the same file descriptors to the others, so the
 * exec, file, network and cgroup programs see one set of policies.
 *
 * Writers: the agent's enforcement module alone writes policies, rules and pending names. The kernel
 * writes `cgroups` only to copy an entry (a new cgroup under a tagged parent, or a pending container
 * starting) and to drop it when the cgroup goes away; it writes `runtime_tasks`, `stats` and the ring
 * buffer.
 */
#ifndef HOSTGUARD_MAPS_H
#define HOSTGUARD_MAPS_H

#include "hostguard.h"

#ifndef HG_MAX_RULES
#define HG_MAX_RULES 262144
#endif

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);                 /* cgroup id */
	__type(value, struct hg_cgroup);
} cgroups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct hg_pending_key); /* cgroup leaf name, e.g. the container id */
	__type(value, struct hg_cgroup);
} pending SEC(".maps");

/*
 * The container runtime's own processes inside a tagged cgroup, by thread group: the ones the runtime
 * moves in without an exec (runc init setting a container up, or joining it for `docker exec`), the
 * ones cloned straight into the cgroup from outside it, and their forks — until they exec a program
 * inside the container's root (the entrypoint, or the `docker exec` command). Before that, runc may
 * re-exec itself from a copy outside the container (runc 1.1's memfd clone): still the runtime.
 */
struct hg_runtime_task {
	__u64 cgroup_id;
	__u32 tgid;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct hg_runtime_task);
	__type(value, __u8);
} runtime_tasks SEC(".maps");

/*
 * Cgroups under which the container runtime creates one cgroup per container (Docker: /docker).
 * A new cgroup there that is neither pending nor inside a tagged cgroup is held (HG_POLICY_HOLD)
 * until the agent has asked the runtime for its labels: the race where a container starts before
 * the agent heard of it ends with the container stopped, not unchecked.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u64);                 /* cgroup id */
	__type(value, __u8);                /* enum hg_runtime_parent */
} runtime_parents SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);                 /* policy id */
	__type(value, struct hg_policy);
} policies SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, HG_MAX_RULES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct hg_path_key);
	__type(value, __u32);               /* 1: allowed */
} exec_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, HG_MAX_RULES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct hg_path_key);
	__type(value, __u32);               /* enum hg_access bits allowed */
} file_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, HG_MAX_RULES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct hg_net4_key);
	__type(value, struct hg_ports);
} net4_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, HG_MAX_RULES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct hg_net6_key);
	__type(value, struct hg_ports);
} net6_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HG_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

/* Per-CPU scratch space: paths are built here, far too big for the 512-byte BPF stack. */
#define HG_SCRATCH_HALF 4096

/*
 * State of one path walk. It lives in map memory, not on the stack, on purpose: the verifier does not
 * track values loaded from a map, so every step of the bpf_loop looks the same to it and is checked
 * once instead of once per level and branch.
 */
struct hg_walk {
	__u64 dentry;
	__u64 vfsmnt;
	__u64 mnt;
	__u64 root_dentry;
	__u64 root_mnt;
	__u64 self_pid;         /* struct pid of the caller's thread group: /proc/<it> is /proc/self */
	__u32 pos;
	__u32 which;            /* 0: scratch.path, 1: scratch.exe */
	__u32 complete;
	__u32 inside_root;      /* the walk reached the task's root (not a namespace or pseudo-fs root) */
};

struct hg_scratch {
	struct hg_walk walk;
	char path[2 * HG_SCRATCH_HALF];
	char exe[2 * HG_SCRATCH_HALF];
	struct hg_path_key key;
	__u8 slack[8];       /* lets masked copies into key.path stay inside the value */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hg_scratch);
} scratch SEC(".maps");

#endif /* HOSTGUARD_MAPS_H */
