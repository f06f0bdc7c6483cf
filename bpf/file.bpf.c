// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * File enforcement without LSM: on the way out of every open-family syscall that returned a file,
 * name the opened file from the file table (kernel objects: symlinks, "..", dirfd already resolved),
 * check it against the policy, and SIGKILL the caller before it gets to use the descriptor. The open
 * itself has happened by then (an O_TRUNC has truncated): where BPF LSM programs load, lsm.bpf.c
 * refuses the open instead and this object is not loaded.
 */
#include "verdicts.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";


/* The syscall's own arguments are still in the user registers on the way out. */
static __always_inline unsigned long syscall_arg(int n)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());

	switch (n) {
	case 1:
		return BPF_CORE_READ(regs, si);
	case 2:
		return BPF_CORE_READ(regs, dx);
	default:
		return 0;
	}
}

static __always_inline struct file *fd_file(struct task_struct *task, long fd)
{
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *file = NULL;

	if (fd < 0 || fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]);
	return file;
}

/* Where each syscall keeps its open flags; read only for tagged callers. */
enum flags_source {
	FLAGS_ARG1 = 1,          /* open(path, flags, mode) */
	FLAGS_ARG2 = 2,          /* openat(dirfd, path, flags, mode), open_by_handle_at */
	FLAGS_CREAT,             /* creat(): O_CREAT | O_WRONLY | O_TRUNC */
	FLAGS_OPEN_HOW,          /* openat2(dirfd, path, struct open_how *how, size) */
};

/* The open flags the caller passed (O_CREAT and O_TRUNC are gone from file->f_flags by now). */
static __always_inline __u64 open_flags(enum flags_source source)
{
	__u64 flags = 0;

	switch (source) {
	case FLAGS_CREAT:
		return HG_O_CREAT | HG_O_TRUNC;
	case FLAGS_OPEN_HOW:
		bpf_probe_read_user(&flags, sizeof(flags), (void *)syscall_arg(2));   /* open_how.flags */
		return flags;
	default:
		return syscall_arg(source);
	}
}

static __always_inline int check_open(long fd, enum flags_source source)
{
	struct hg_cgroup *tag;
	struct file *file;
	__u32 mode, policy_id;
	__u64 cgroup_id;

	tag = tagged_cgroup(&cgroup_id);
	if (!tag || fd < 0)
		return 0;
	policy_id = tag->policy_id;
	if (policy_id == HG_POLICY_HOLD || is_runtime(cgroup_id))
		return 0;                       /* runc init, not yet the container's own code */
	file = fd_file((struct task_struct *)bpf_get_current_task(), fd);
	if (!file || (BPF_CORE_READ(file, f_flags) & HG_O_PATH))
		return 0;                       /* O_PATH reads and writes nothing */

	mode = BPF_CORE_READ(file, f_mode);
	/* the flags only matter for an open that does not already write: read them only then */
	judge_file(file, open_access(mode, (mode & HG_FMODE_WRITE) ? 0 : open_flags(source)), policy_id,
		   cgroup_id, 1);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_openat")
int hg_exit_openat(struct trace_event_raw_sys_exit *ctx)
{
	return check_open(ctx->ret, FLAGS_ARG2);
}

SEC("tracepoint/syscalls/sys_exit_open")
int hg_exit_open(struct trace_event_raw_sys_exit *ctx)
{
	return check_open(ctx->ret, FLAGS_ARG1);
}

SEC("tracepoint/syscalls/sys_exit_creat")
int hg_exit_creat(struct trace_event_raw_sys_exit *ctx)
{
	return check_open(ctx->ret, FLAGS_CREAT);
}

SEC("tracepoint/syscalls/sys_exit_openat2")
int hg_exit_openat2(struct trace_event_raw_sys_exit *ctx)
{
	return check_open(ctx->ret, FLAGS_OPEN_HOW);
}

SEC("tracepoint/syscalls/sys_exit_open_by_handle_at")
int hg_exit_open_by_handle_at(struct trace_event_raw_sys_exit *ctx)
{
	return check_open(ctx->ret, FLAGS_ARG2);
}
