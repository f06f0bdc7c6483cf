// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * Tagging without a window: a container's cgroup is put under its policy in the same instant the
 * kernel creates it, before the runtime can move a process into it.
 *  - a cgroup created inside a tagged cgroup inherits its policy;
 *  - a cgroup whose leaf name the agent announced (map `pending`, filled from Docker's "create"
 *    event, which comes before "start") gets the announced policy;
 *  - any other new cgroup of the container runtime (`runtime_parents`) is held: its first exec is
 *    stopped until the agent has looked the container up (see exec.bpf.c).
 * Processes the runtime puts into a tagged cgroup (runc init) are recorded in `runtime_tasks`, with
 * their forks, so that their set-up work is not taken for the container's.
 * Entries are dropped when the cgroup is removed. Only the unified (cgroup2) hierarchy counts: it is
 * the one bpf_get_current_cgroup_id() reports.
 */
#include "common.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

static __always_inline int on_unified_hierarchy(struct cgroup *cgrp)
{
	return BPF_CORE_READ(cgrp, root, hierarchy_id) == 0;
}

/*
 * Whether a new cgroup is a container of the runtime: any child of a parent the runtime owns
 * (cgroupfs driver: /docker), or a "docker-*" child of a parent it shares (systemd driver:
 * system.slice, where host services must never be held).
 */
static __always_inline int is_runtime_child(__u64 parent_id, struct hg_pending_key *name)
{
	__u8 *kind = bpf_map_lookup_elem(&runtime_parents, &parent_id);

	if (!kind)
		return 0;
	if (*kind == HG_RUNTIME_PARENT_OWNED)
		return 1;
	return name->name[0] == 'd' && name->name[1] == 'o' && name->name[2] == 'c' && name->name[3] == 'k' &&
	       name->name[4] == 'e' && name->name[5] == 'r' && name->name[6] == '-';
}

SEC("tp_btf/cgroup_mkdir")
int BPF_PROG(hg_cgroup_mkdir, struct cgroup *cgrp, const char *path)
{
	struct hg_cgroup hold = { .policy_id = HG_POLICY_HOLD };
	struct hg_pending_key name = {};
	struct hg_cgroup_event *e;
	struct hg_cgroup *tag;
	__u64 id, parent_id;
	__u8 inherited = 1;

	if (!on_unified_hierarchy(cgrp))
		return 0;
	id = BPF_CORE_READ(cgrp, kn, id);
	parent_id = BPF_CORE_READ(cgrp, self.parent, cgroup, kn, id);
	bpf_probe_read_kernel_str(name.name, sizeof(name.name), BPF_CORE_READ(cgrp, kn, name));
	tag = bpf_map_lookup_elem(&cgroups, &parent_id);
	if (!tag) {
		tag = bpf_map_lookup_elem(&pending, &name);
		inherited = 0;
	}
	if (!tag && is_runtime_child(parent_id, &name))
		tag = &hold;                    /* a container the agent has not heard of yet */
	if (!tag)
		return 0;
	bpf_map_update_elem(&cgroups, &id, tag, BPF_ANY);

	/* Tell the agent which container this cgroup id belongs to, for its log lines. */
	e = reserve_event(sizeof(*e));
	if (!e)
		return 0;
	e->opcode = HG_OP_CGROUP;
	e->inherited = inherited;
	e->pad[0] = e->pad[1] = 0;
	e->policy_id = tag->policy_id;
	e->cgroup_id = id;
	e->parent_id = parent_id;
	__builtin_memcpy(e->name, name.name, sizeof(e->name));
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("tp_btf/cgroup_attach_task")
int BPF_PROG(hg_cgroup_attach_task, struct cgroup *dst, const char *path, struct task_struct *task,
	     bool threadgroup)
{
	struct hg_runtime_task runtime = {};
	__u8 one = 1;

	if (!on_unified_hierarchy(dst))
		return 0;
	runtime.cgroup_id = BPF_CORE_READ(dst, kn, id);
	if (!bpf_map_lookup_elem(&cgroups, &runtime.cgroup_id))
		return 0;
	runtime.tgid = BPF_CORE_READ(task, tgid);
	bpf_map_update_elem(&runtime_tasks, &runtime, &one, BPF_ANY);
	return 0;
}

/*
 * A new process in a tagged cgroup is the runtime's when its parent is (runc init's stages fork
 * before the entrypoint), or when it was cloned into the cgroup from outside (CLONE_INTO_CGROUP).
 * Threads share their thread group's entry.
 */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(hg_process_fork, struct task_struct *parent, struct task_struct *child)
{
	struct hg_runtime_task key = {};
	__u64 parent_cgroup;
	__u8 one = 1;

	key.cgroup_id = BPF_CORE_READ(child, cgroups, dfl_cgrp, kn, id);
	if (!bpf_map_lookup_elem(&cgroups, &key.cgroup_id))
		return 0;
	parent_cgroup = bpf_get_current_cgroup_id();
	key.tgid = BPF_CORE_READ(parent, tgid);
	if (parent_cgroup == key.cgroup_id && !bpf_map_lookup_elem(&runtime_tasks, &key))
		return 0;               /* the container's own code forking */
	key.tgid = BPF_CORE_READ(child, tgid);
	bpf_map_update_elem(&runtime_tasks, &key, &one, BPF_ANY);
	return 0;
}

static long forget_runtime_task(void *map, struct hg_runtime_task *key, __u8 *value, __u64 *cgroup_id)
{
	if (key->cgroup_id == *cgroup_id)
		bpf_map_delete_elem(map, key);
	return 0;
}

SEC("tp_btf/cgroup_rmdir")
int BPF_PROG(hg_cgroup_rmdir, struct cgroup *cgrp, const char *path)
{
	__u64 id;

	if (!on_unified_hierarchy(cgrp))
		return 0;
	id = BPF_CORE_READ(cgrp, kn, id);
	if (bpf_map_delete_elem(&cgroups, &id) == 0)
		bpf_for_each_map_elem(&runtime_tasks, forget_runtime_task, &id, 0);
	return 0;
}
