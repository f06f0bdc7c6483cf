// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * Feature probes, loaded one program at a time at start: can this kernel run BPF LSM programs and
 * fentry programs, and may cgroup programs send signals? Some kernels refuse them (lockdown, missing lsm=bpf, no BTF trampolines); the
 * agent reports what it found and uses the tracepoint path where they are refused.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("lsm/bprm_check_security")
int BPF_PROG(hg_probe_lsm, struct linux_binprm *bprm)
{
	return 0;
}

SEC("cgroup/connect4")
int hg_probe_net_signal(struct bpf_sock_addr *ctx)
{
	bpf_send_signal(0);     /* signal 0: nothing is sent; the question is whether it loads */
	return 1;
}

SEC("fentry/do_unlinkat")
int BPF_PROG(hg_probe_fentry)
{
	return 0;
}
