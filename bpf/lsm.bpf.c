// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * The LSM path, where the kernel runs BPF LSM programs (lsm=...,bpf): exec and open verdicts are
 * taken in the security hooks, before the act, and a violation is refused with EPERM — the program
 * never starts, the file is never opened (an O_TRUNC never truncates). The process lives on.
 * Same maps, same naming of files (verdicts.h) as the tracepoint path; the agent loads this object
 * only where the probe shows LSM programs load, and then tells exec.bpf.c and file.bpf.c to leave
 * verdicts to it. Egress stays with the cgroup sock_addr programs, which already refuse before any
 * packet is built.
 */
#include "verdicts.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define HG_EPERM 1

SEC("lsm/bprm_check_security")
int BPF_PROG(hg_lsm_exec, struct linux_binprm *bprm, int ret)
{
	struct hg_runtime_task runtime = {};
	struct hg_scratch *s;
	struct hg_cgroup *tag;
	__u64 cgroup_id;
	__u32 len, policy_id;
	__u8 action;

	if (ret)
		return ret;
	tag = tagged_cgroup(&cgroup_id);
	if (!tag)
		return 0;
	policy_id = tag->policy_id;
	if (policy_id == HG_POLICY_HOLD)
		return 0;               /* exec.bpf.c stops it at its first instruction; the agent judges */
	s = scratch_space();
	if (!s)
		return 0;
	len = resolve_exec(bprm);
	if (runtime_exec(s, &runtime, cgroup_id) == 2)
		return 0;               /* runc re-executing itself from outside the container */
	if (exec_allowed(s, len, policy_id))
		return 0;
	action = answer_violation(policy_id, 0);
	exec_event(action, policy_id, cgroup_id, s, len, NULL, 0);
	return action == HG_ACTION_DENIED ? -HG_EPERM : 0;
}

SEC("lsm/file_open")
int BPF_PROG(hg_lsm_file_open, struct file *file, int ret)
{
	struct hg_cgroup *tag;
	__u32 flags, policy_id;
	__u64 cgroup_id;

	if (ret)
		return ret;
	tag = tagged_cgroup(&cgroup_id);
	if (!tag)
		return 0;
	policy_id = tag->policy_id;
	if (policy_id == HG_POLICY_HOLD || is_runtime(cgroup_id))
		return 0;               /* runc init, not yet the container's own code */
	flags = BPF_CORE_READ(file, f_flags);   /* O_TRUNC is still there: the truncation comes later */
	if (flags & HG_O_PATH)
		return 0;
	return judge_file(file, open_access(BPF_CORE_READ(file, f_mode), flags), policy_id, cgroup_id, 0)
	       == HG_ACTION_DENIED ? -HG_EPERM : 0;
}
