// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * Exec enforcement without LSM: sched_process_exec fires once the new image is in place and before
 * it runs a single instruction; a forbidden program gets SIGKILL there, which is delivered on the way
 * back to user space. The program is named from bprm->file (a kernel object), not from the
 * user-supplied filename.
 *
 * A held cgroup (see cgroup.bpf.c) gets SIGSTOP instead of a verdict, and an event with the action
 * HG_ACTION_HELD; the agent resumes or kills the program once it knows the container's policy. A held
 * exec whose event is lost stays stopped until the agent resolves the cgroup, and is then resumed.
 */
#include "common.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* argv as the new program sees it: the strings execve copied to the top of its stack. */
static __always_inline void copy_argv(struct hg_exec_event *e, struct task_struct *task)
{
	unsigned long start = BPF_CORE_READ(task, mm, arg_start);
	unsigned long end = BPF_CORE_READ(task, mm, arg_end);
	__u32 len = end > start ? end - start : 0;

	if (len > HG_EVENT_ARGV_LEN - 1)
		len = HG_EVENT_ARGV_LEN - 1;
	barrier_var(len);
	len &= HG_EVENT_ARGV_LEN - 1;
	e->argv_len = 0;
	if (bpf_probe_read_user(e->argv, len, (void *)start) == 0)
		e->argv_len = len;
	e->argv[len] = '\0';
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(hg_exec, struct task_struct *task, pid_t old_pid, struct linux_binprm *bprm)
{
	struct hg_runtime_task runtime = {};
	struct hg_scratch *s;
	struct hg_cgroup *tag;
	struct hg_exec_event *e;
	struct file *file;
	__u64 cgroup_id;
	__u32 len, policy_id;
	__u8 action;

	tag = tagged_cgroup(&cgroup_id);
	if (!tag)
		return 0;
	policy_id = tag->policy_id;

	s = scratch_space();
	if (!s)
		return 0;
	file = BPF_CORE_READ(bprm, file);
	len = resolve_path(BPF_CORE_READ(file, f_path.dentry), BPF_CORE_READ(file, f_path.mnt), 0, 0);
	runtime.cgroup_id = cgroup_id;
	runtime.tgid = bpf_get_current_pid_tgid() >> 32;
	if (bpf_map_lookup_elem(&runtime_tasks, &runtime)) {
		if (!s->walk.inside_root)
			return 0;       /* runc re-executing itself from outside the container: still the runtime */
		bpf_map_delete_elem(&runtime_tasks, &runtime);  /* its first program of the container's */
	}
	if (policy_id == HG_POLICY_HOLD) {
		/*
		 * The agent has not resolved this container yet. Stop the program before its first
		 * instruction; the agent judges this exec against the container's policy (the same
		 * exec_rules map) and continues or kills it.
		 */
		bpf_send_signal(HG_SIGSTOP);
		action = HG_ACTION_HELD;
	} else if (len && lookup_path_rule(&exec_rules, &s->key, policy_id, s->path, len)) {
		return 0;
	} else {
		action = answer_violation(policy_id, 1);
	}
	e = reserve_event(sizeof(*e));
	if (!e)
		return 0;
	fill_header(&e->hdr, HG_OP_EXEC, action, policy_id, cgroup_id, s, 0);
	e->path_len = 0;
	e->path[0] = '\0';
	if (len)
		e->path_len = copy_path_out(e->path, s->path, len);
	__builtin_memcpy(e->hdr.exe, e->path, sizeof(e->path));
	e->hdr.exe_len = e->path_len;
	copy_argv(e, task);
	bpf_ringbuf_submit(e, 0);
	return 0;
}
