/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/* Helpers every hostguard program uses: who is tagged, how a path is named, how a violation is told. */
#ifndef HOSTGUARD_COMMON_H
#define HOSTGUARD_COMMON_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "hostguard.h"
#include "maps.h"

/*
 * Anchors the shared structs in every object's BTF (locals alone leave them in DWARF only):
 * tests/test_layout.py checks the agent's mirrors against the object, field by field.
 */
union hg_btf_anchor {        /* by value: pointers alone would leave forward declarations */
	struct hg_event_header header;
	struct hg_exec_event exec;
	struct hg_file_event file;
	struct hg_connect_event connect;
	struct hg_cgroup_event cgroup;
	struct hg_policy policy;
	struct hg_path_key path_key;
	struct hg_net4_key net4_key;
	struct hg_net6_key net6_key;
	struct hg_ports ports;
	struct hg_pending_key pending_key;
} hg_btf_anchor;

#define HG_SIGKILL 9
#define HG_SIGSTOP 19
#define HG_WALK_MAX_DEPTH 64
#define HG_NAME_MASK 255                 /* NAME_MAX */
#define HG_HALF_MASK (HG_SCRATCH_HALF - 1)
#define HG_PROC_SUPER_MAGIC 0x9fa0

/* The policy the calling task's cgroup is under, or NULL: the only cost untagged tasks pay. */
static __always_inline struct hg_cgroup *tagged_cgroup(__u64 *cgroup_id)
{
	*cgroup_id = bpf_get_current_cgroup_id();
	return bpf_map_lookup_elem(&cgroups, cgroup_id);
}

/* Whether the caller is the container runtime setting up or joining this cgroup (see runtime_tasks). */
static __always_inline int is_runtime(__u64 cgroup_id)
{
	struct hg_runtime_task key = {
		.cgroup_id = cgroup_id,
		.tgid = bpf_get_current_pid_tgid() >> 32,
	};

	return bpf_map_lookup_elem(&runtime_tasks, &key) != NULL;
}

static __always_inline void count(__u32 stat)
{
	__u64 *value = bpf_map_lookup_elem(&stats, &stat);

	if (value)
		*value += 1;
}

static __always_inline struct hg_scratch *scratch_space(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&scratch, &zero);
}

static const char hg_self[] = "self";

/*
 * /proc/self is a symlink the kernel has already followed: the opened file sits under /proc/<pid>.
 * Name the caller's own pid directory "self" again, so that rules can say /proc/self/.
 */
static __always_inline int is_own_proc_dir(struct dentry *dentry, struct dentry *parent,
					   struct vfsmount *vfsmnt, __u64 self_pid)
{
	struct proc_inode *inode;

	if (parent != BPF_CORE_READ(vfsmnt, mnt_root) ||
	    BPF_CORE_READ(dentry, d_sb, s_magic) != HG_PROC_SUPER_MAGIC)
		return 0;
	inode = (void *)BPF_CORE_READ(dentry, d_inode) - bpf_core_field_offset(struct proc_inode, vfs_inode);
	return (__u64)BPF_CORE_READ(inode, pid) == self_pid;
}

/* One step towards the root; bpf_loop verifies it once instead of once per level. */
static long walk_step(__u32 index, void *unused)
{
	struct hg_scratch *s = scratch_space();
	struct hg_walk *w;
	struct dentry *dentry, *parent;
	struct vfsmount *vfsmnt;
	struct mount *mnt;
	struct qstr name;
	__u32 len, pos;
	char *buf;

	if (!s)
		return 1;
	w = &s->walk;
	dentry = (struct dentry *)w->dentry;
	vfsmnt = (struct vfsmount *)w->vfsmnt;
	mnt = (struct mount *)w->mnt;
	buf = w->which ? s->exe : s->path;
	if (w->dentry == w->root_dentry && w->vfsmnt == w->root_mnt) {
		w->complete = 1;
		w->inside_root = 1;
		return 1;
	}
	if (dentry == BPF_CORE_READ(vfsmnt, mnt_root)) {
		struct mount *up = BPF_CORE_READ(mnt, mnt_parent);

		if (up == mnt) {                /* the namespace's root: outside the task's root */
			w->complete = 1;
			return 1;
		}
		w->dentry = (__u64)BPF_CORE_READ(mnt, mnt_mountpoint);
		w->mnt = (__u64)up;
		w->vfsmnt = (__u64)&up->mnt;
		return 0;
	}
	parent = BPF_CORE_READ(dentry, d_parent);
	if (parent == dentry) {
		w->complete = 1;
		return 1;
	}
	name = BPF_CORE_READ(dentry, d_name);
	len = name.len & HG_NAME_MASK;
	if (is_own_proc_dir(dentry, parent, vfsmnt, w->self_pid)) {
		name.name = (const unsigned char *)hg_self;
		len = 4;
	}
	pos = w->pos;
	if (len + 1 > pos || pos >= HG_SCRATCH_HALF)
		return 1;                       /* longer than the buffer: incomplete */
	pos -= len;
	bpf_probe_read_kernel(&buf[pos & HG_HALF_MASK], len, name.name);
	pos -= 1;
	buf[pos & HG_HALF_MASK] = '/';
	w->pos = pos;
	w->dentry = (__u64)parent;
	return 0;
}

/*
 * Name a (dentry, vfsmount) pair as the calling task sees it: walk towards the task's root,
 * crossing mount points, writing components backwards so that the path ends just before
 * HG_SCRATCH_HALF - 1 (and a '/' there when trailing_slash is set). Returns the path's length (see
 * path_start()). Kernel objects, not user pointers: symlinks, "..", dirfd and bind mounts are already
 * resolved. A path deeper than HG_WALK_MAX_DEPTH or longer than the buffer returns 0, which callers
 * treat as matching no rule.
 */
static __always_inline __u32 resolve_path(struct dentry *dentry, struct vfsmount *vfsmnt, __u32 which,
					  __u32 trailing_slash)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct hg_scratch *s = scratch_space();
	struct hg_walk *w;
	char *buf;
	__u32 pos = HG_SCRATCH_HALF - 1;

	if (!s)
		return 0;
	w = &s->walk;
	w->dentry = (__u64)dentry;
	w->vfsmnt = (__u64)vfsmnt;
	w->mnt = (__u64)((void *)vfsmnt - bpf_core_field_offset(struct mount, mnt));
	w->root_dentry = (__u64)BPF_CORE_READ(task, fs, root.dentry);
	w->root_mnt = (__u64)BPF_CORE_READ(task, fs, root.mnt);
	w->self_pid = (__u64)BPF_CORE_READ(task, group_leader, thread_pid);
	w->which = which;
	w->complete = 0;
	w->inside_root = 0;
	buf = which ? s->exe : s->path;
	buf[HG_SCRATCH_HALF - 1] = '\0';
	if (trailing_slash) {                   /* directories are named "dir/", like prefix rules */
		pos -= 1;
		buf[pos] = '/';
	}
	w->pos = pos;
	bpf_loop(HG_WALK_MAX_DEPTH, walk_step, NULL, 0);
	if (!w->complete)
		return 0;
	pos = w->pos;
	if (pos == HG_SCRATCH_HALF - 1) {       /* the root itself */
		pos -= 1;
		buf[pos] = '/';
	}
	if (pos >= HG_SCRATCH_HALF)
		return 0;
	return HG_SCRATCH_HALF - 1 - pos;
}

/* The calling task's executable, named into scratch.exe; returns its length (0: unknown). */
static __always_inline __u32 resolve_exe(void)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct file *exe = BPF_CORE_READ(task, mm, exe_file);

	if (!exe)
		return 0;
	return resolve_path(BPF_CORE_READ(exe, f_path.dentry), BPF_CORE_READ(exe, f_path.mnt), 1, 0);
}

/* Start offset of a path resolve_path() returned with length len. */
static __always_inline __u32 path_start(__u32 len)
{
	return (HG_SCRATCH_HALF - 1 - len) & HG_HALF_MASK;
}

/*
 * Look a path up in an LPM trie of path rules. Exact rules are stored with their terminating NUL,
 * so the key carries one too when the whole path fits; a longer path can only match "dir/" rules.
 */
static __always_inline __u32 *lookup_path_rule(void *trie, struct hg_path_key *key, __u32 policy_id,
					       const char *buf, __u32 len)
{
	__u32 copy = len + 1;                    /* with the NUL */

	if (copy > HG_PATH_KEY_LEN)
		copy = HG_PATH_KEY_LEN;
	barrier_var(copy);                       /* keep the mask below for the verifier */
	copy &= HG_NAME_MASK;
	key->policy_id = policy_id;
	bpf_probe_read_kernel(key->path, copy, &buf[path_start(len)]);
	key->prefixlen = 32 + 8 * copy;
	return bpf_map_lookup_elem(trie, key);
}

/* What a violation leads to under this policy; kills the caller when the policy enforces. */
static __always_inline __u8 answer_violation(__u32 policy_id, int kill)
{
	struct hg_policy *policy = bpf_map_lookup_elem(&policies, &policy_id);

	count(HG_STAT_VIOLATIONS);
	if (policy && policy->mode == HG_MODE_AUDIT)
		return HG_ACTION_AUDITED;
	if (kill) {
		bpf_send_signal(HG_SIGKILL);
		return HG_ACTION_KILLED;
	}
	return HG_ACTION_DENIED;
}

static __always_inline __u32 copy_path_out(char *dst, const char *buf, __u32 len)
{
	__u32 copy = len;

	if (copy > HG_EVENT_PATH_LEN - 1)
		copy = HG_EVENT_PATH_LEN - 1;
	barrier_var(copy);
	copy &= HG_NAME_MASK;
	bpf_probe_read_kernel(dst, copy, &buf[path_start(len)]);
	dst[copy] = '\0';
	return len;
}

/* Fill the common head of an event; exe_len is what resolve_exe() returned (0: leave exe empty). */
static __always_inline void fill_header(struct hg_event_header *hdr, __u8 opcode, __u8 action,
					__u32 policy_id, __u64 cgroup_id, struct hg_scratch *s, __u32 exe_len)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	hdr->opcode = opcode;
	hdr->action = action;
	hdr->pad[0] = hdr->pad[1] = 0;
	hdr->policy_id = policy_id;
	hdr->ktime_ns = bpf_ktime_get_boot_ns();
	hdr->cgroup_id = cgroup_id;
	hdr->pid = pid_tgid >> 32;
	hdr->tid = (__u32)pid_tgid;
	hdr->ppid = BPF_CORE_READ(task, real_parent, tgid);
	hdr->uid = (__u32)bpf_get_current_uid_gid();
	bpf_get_current_comm(hdr->comm, sizeof(hdr->comm));
	hdr->pad2 = 0;
	hdr->exe_len = 0;
	hdr->exe[0] = '\0';
	if (exe_len)
		hdr->exe_len = copy_path_out(hdr->exe, s->exe, exe_len);
}

/* The ring buffer was full: enforcement already happened, the event is counted as lost. */
static __always_inline void *reserve_event(__u64 size)
{
	void *event = bpf_ringbuf_reserve(&events, size, 0);

	if (!event)
		count(HG_STAT_EVENTS_LOST);
	return event;
}

#endif /* HOSTGUARD_COMMON_H */
