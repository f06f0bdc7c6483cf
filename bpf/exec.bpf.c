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
#include "verdicts.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Set by the agent where the LSM path (lsm.bpf.c) takes exec verdicts: only the hold stays here. */
const volatile bool hg_lsm_verdicts SEC(".rodata.knobs") = false;

SEC("tp_btf/sched_process_exec")
int BPF_PROG(hg_exec, struct task_struct *task, pid_t old_pid, struct linux_binprm *bprm)
{
	struct hg_runtime_task runtime = {};
	struct hg_scratch *s;
	struct hg_cgroup *tag;
	__u64 cgroup_id;
	__u32 len, policy_id;

	tag = tagged_cgroup(&cgroup_id);
	if (!tag)
		return 0;
	policy_id = tag->policy_id;

	s = scratch_space();
	if (!s)
		return 0;
	len = resolve_exec(bprm);
	switch (runtime_exec(s, &runtime, cgroup_id)) {
	case 2:
		return 0;               /* still the runtime */
	case 1:
		bpf_map_delete_elem(&runtime_tasks, &runtime);  /* from here on, the container's code */
	}
	if (policy_id == HG_POLICY_HOLD) {
		/*
		 * The agent has not resolved this container yet. Stop the program before its first
		 * instruction; the agent judges this exec against the container's policy (the same
		 * exec_rules map) and continues or kills it.
		 */
		bpf_send_signal(HG_SIGSTOP);
		exec_event(HG_ACTION_HELD, policy_id, cgroup_id, s, len, task, 1);
		return 0;
	}
	if (hg_lsm_verdicts || exec_allowed(s, len, policy_id))
		return 0;
	exec_event(answer_violation(policy_id, 1), policy_id, cgroup_id, s, len, task, 1);
	return 0;
}
