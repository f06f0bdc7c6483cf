/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * The exec and file verdicts, shared by the tracepoint path (exec.bpf.c, file.bpf.c: the act has
 * happened, the caller is killed) and the LSM path (lsm.bpf.c: the act is refused with EPERM), so
 * that both name files the same way and ask the same maps the same question.
 */
#ifndef HOSTGUARD_VERDICTS_H
#define HOSTGUARD_VERDICTS_H

#include "common.h"

#define HG_O_CREAT 0100
#define HG_O_TRUNC 01000
#define HG_O_PATH 010000000
#define HG_FMODE_READ 0x1
#define HG_FMODE_WRITE 0x2
#define HG_S_IFMT 00170000
#define HG_S_IFDIR 0040000

/* argv as the new program sees it (only meaningful once the new image is in place). */
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

/*
 * Judge an open: 0 when allowed, else the action taken (the event is sent). need: access bits the
 * open asks for. kill: the tracepoint path kills, the LSM path refuses.
 */
static __always_inline __u8 judge_file(struct file *file, __u32 need, __u32 policy_id, __u64 cgroup_id,
				       int kill)
{
	struct hg_file_event *e;
	struct hg_scratch *s;
	__u32 len, exe_len, *allowed;
	__u8 action;
	int is_dir = (BPF_CORE_READ(file, f_inode, i_mode) & HG_S_IFMT) == HG_S_IFDIR;

	s = scratch_space();
	if (!s)
		return 0;
	len = resolve_path(BPF_CORE_READ(file, f_path.dentry), BPF_CORE_READ(file, f_path.mnt), 0, is_dir);
	if (len) {
		allowed = lookup_path_rule(&file_rules, &s->key, policy_id, s->path, len);
		if (allowed && (need & ~*allowed) == 0)
			return 0;
	}
	action = answer_violation(policy_id, kill);
	exe_len = resolve_exe();
	e = reserve_event(sizeof(*e));
	if (!e)
		return action;
	fill_header(&e->hdr, HG_OP_FILE, action, policy_id, cgroup_id, s, exe_len);
	e->access = need;
	e->path_len = 0;
	e->path[0] = '\0';
	if (len)
		e->path_len = copy_path_out(e->path, s->path, len);
	bpf_ringbuf_submit(e, 0);
	return action;
}

/* Send the event of a judged exec; with_argv only once the new image (and its argv) is in place. */
static __always_inline void exec_event(__u8 action, __u32 policy_id, __u64 cgroup_id, struct hg_scratch *s,
				       __u32 len, struct task_struct *task, int with_argv)
{
	struct hg_exec_event *e = reserve_event(sizeof(*e));

	if (!e)
		return;
	fill_header(&e->hdr, HG_OP_EXEC, action, policy_id, cgroup_id, s, 0);
	e->path_len = 0;
	e->path[0] = '\0';
	if (len)
		e->path_len = copy_path_out(e->path, s->path, len);
	__builtin_memcpy(e->hdr.exe, e->path, sizeof(e->path));
	e->hdr.exe_len = e->path_len;
	e->argv_len = 0;
	e->argv[0] = '\0';
	if (with_argv)
		copy_argv(e, task);
	bpf_ringbuf_submit(e, 0);
}

/* The access bits an open asks for: f_mode's read and write, and O_CREAT or O_TRUNC count as write. */
static __always_inline __u32 open_access(__u32 f_mode, __u64 flags)
{
	__u32 need = 0;

	if (f_mode & HG_FMODE_READ)
		need |= HG_ACCESS_READ;
	if ((f_mode & HG_FMODE_WRITE) || (flags & (HG_O_CREAT | HG_O_TRUNC)))
		need |= HG_ACCESS_WRITE;
	return need;
}

/* Name the program an exec runs into scratch.path; returns its length (see resolve_path()). */
static __always_inline __u32 resolve_exec(struct linux_binprm *bprm)
{
	struct file *file = BPF_CORE_READ(bprm, file);

	return resolve_path(BPF_CORE_READ(file, f_path.dentry), BPF_CORE_READ(file, f_path.mnt), 0, 0);
}

/*
 * The caller's standing as the runtime (runtime_tasks): 0 not the runtime; 1 the runtime running
 * its first program inside the container's root (the entrypoint); 2 the runtime re-executing
 * itself from a copy outside that root (s->path was just resolved).
 */
static __always_inline int runtime_exec(struct hg_scratch *s, struct hg_runtime_task *runtime,
					__u64 cgroup_id)
{
	runtime->cgroup_id = cgroup_id;
	runtime->tgid = bpf_get_current_pid_tgid() >> 32;
	if (!bpf_map_lookup_elem(&runtime_tasks, runtime))
		return 0;
	return s->walk.inside_root ? 1 : 2;
}

/* Whether the program in s->path (length len, just resolved) may run under policy_id. */
static __always_inline int exec_allowed(struct hg_scratch *s, __u32 len, __u32 policy_id)
{
	return len && lookup_path_rule(&exec_rules, &s->key, policy_id, s->path, len);
}

#endif /* HOSTGUARD_VERDICTS_H */
