// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * The empty floor: hostguard's hook points with programs that only return. What is left of the
 * benchmark's overhead with this loaded is what any eBPF agent on these hooks must pay.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("tp_btf/sched_process_exec")
int BPF_PROG(floor_exec) { return 0; }

SEC("tracepoint/syscalls/sys_exit_openat")
int floor_exit_openat(void *ctx) { return 0; }

SEC("tracepoint/syscalls/sys_exit_open")
int floor_exit_open(void *ctx) { return 0; }

SEC("tracepoint/syscalls/sys_exit_creat")
int floor_exit_creat(void *ctx) { return 0; }

SEC("tracepoint/syscalls/sys_exit_openat2")
int floor_exit_openat2(void *ctx) { return 0; }

SEC("tracepoint/syscalls/sys_exit_open_by_handle_at")
int floor_exit_open_by_handle_at(void *ctx) { return 0; }

SEC("tp_btf/cgroup_mkdir")
int BPF_PROG(floor_cgroup_mkdir) { return 0; }

SEC("tp_btf/cgroup_attach_task")
int BPF_PROG(floor_cgroup_attach_task) { return 0; }

SEC("tp_btf/cgroup_rmdir")
int BPF_PROG(floor_cgroup_rmdir) { return 0; }

SEC("cgroup/connect4")
int floor_connect4(struct bpf_sock_addr *ctx) { return 1; }

SEC("cgroup/connect6")
int floor_connect6(struct bpf_sock_addr *ctx) { return 1; }

SEC("cgroup/sendmsg4")
int floor_sendmsg4(struct bpf_sock_addr *ctx) { return 1; }

SEC("cgroup/sendmsg6")
int floor_sendmsg6(struct bpf_sock_addr *ctx) { return 1; }

SEC("cgroup/sock_create")
int floor_sock_create(struct bpf_sock *ctx) { return 1; }
