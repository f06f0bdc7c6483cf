// SPDX-License-Identifier: Apache-2.0
/*
 * Tight syscall loops for the overhead benchmark: the same work in every configuration, timed from
 * inside the process so that only the syscalls' own cost (and what hooks add to it) is measured.
 *
 *   loops open PATH COUNT        openat(PATH, O_RDONLY) + close, COUNT times
 *   loops connect COUNT          socket + connect to a loopback listener of its own + close
 *   loops exec COUNT             fork + execve(self, "noop") + wait, COUNT times
 *   loops noop                   exit at once (the exec target)
 *
 * Prints one JSON object: {"op": ..., "count": N, "ns_per_op": X}. Static, so that it runs in an
 * empty container image.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static void *accept_forever(void *arg)
{
	int listener = *(int *)arg;

	for (;;) {
		int conn = accept(listener, NULL, NULL);

		if (conn >= 0)
			close(conn);
	}
	return NULL;
}

static int start_listener(struct sockaddr_in *addr)
{
	static int listener;
	socklen_t len = sizeof(*addr);
	pthread_t thread;

	listener = socket(AF_INET, SOCK_STREAM, 0);
	memset(addr, 0, sizeof(*addr));
	addr->sin_family = AF_INET;
	addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (listener < 0 || bind(listener, (struct sockaddr *)addr, sizeof(*addr)) || listen(listener, 4096) ||
	    getsockname(listener, (struct sockaddr *)addr, &len))
		die("listener");
	if (pthread_create(&thread, NULL, accept_forever, &listener))
		die("pthread_create");
	return listener;
}

static void loop_open(const char *path, long count)
{
	for (long i = 0; i < count; i++) {
		int fd = open(path, O_RDONLY);

		if (fd < 0)
			die(path);
		close(fd);
	}
}

static void loop_connect(long count)
{
	struct linger reset = { .l_onoff = 1, .l_linger = 0 };   /* RST on close: no TIME_WAIT pile-up */
	struct sockaddr_in addr;

	start_listener(&addr);
	for (long i = 0; i < count; i++) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);

		if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)))
			die("connect");
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
		close(fd);
	}
}

static void loop_exec(long count)
{
	char *argv[] = {"loops", "noop", NULL};
	char *envp[] = {NULL};

	for (long i = 0; i < count; i++) {
		int status;
		pid_t pid = fork();

		if (pid < 0)
			die("fork");
		if (pid == 0) {
			execve("/proc/self/exe", argv, envp);
			_exit(127);
		}
		if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
			die("exec");
	}
}

int main(int argc, char **argv)
{
	const char *op = argc > 1 ? argv[1] : "";
	long count;
	double start;

	if (!strcmp(op, "noop"))
		return 0;
	if ((!strcmp(op, "open") && argc != 4) || (strcmp(op, "open") && argc != 3)) {
		fprintf(stderr, "usage: loops open PATH COUNT | connect COUNT | exec COUNT | noop\n");
		return 2;
	}
	count = atol(argv[argc - 1]);
	start = now_ns();
	if (!strcmp(op, "open"))
		loop_open(argv[2], count);
	else if (!strcmp(op, "connect"))
		loop_connect(count);
	else if (!strcmp(op, "exec"))
		loop_exec(count);
	else
		return 2;
	printf("{\"op\": \"%s\", \"count\": %ld, \"ns_per_op\": %.1f}\n", op, count, (now_ns() - start) / count);
	return 0;
}
