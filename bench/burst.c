// SPDX-License-Identifier: Apache-2.0
/*
 * A paced open loop for the violation-throughput benchmark (bench/agent_costs.py): the same work as
 * `loops open`, but at a chosen rate, so that the rate at which the agent starts losing log lines can
 * be found. bench/loops.c opens as fast as it can; this one holds a rate for as long as asked.
 *
 *   burst open PATH COUNT RATE   openat(PATH, O_RDONLY) + close, COUNT times, RATE per second
 *                                (0: as fast as possible), paced against an absolute schedule
 *
 * Prints one JSON object: {"op": "open", "count": N, "rate_target": R, "elapsed_ns": E, "rate": X}
 * where rate is the rate actually achieved (COUNT / elapsed). Static, so that it runs in an empty
 * container image (the benchmark bind-mounts it next to loops).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void sleep_until(long long deadline_ns)
{
	struct timespec ts = { .tv_sec = deadline_ns / 1000000000LL, .tv_nsec = deadline_ns % 1000000000LL };

	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

int main(int argc, char **argv)
{
	long count, rate, batch, i;
	long long start, elapsed;

	if (argc != 5 || strcmp(argv[1], "open")) {
		fprintf(stderr, "usage: burst open PATH COUNT RATE\n");
		return 2;
	}
	count = atol(argv[3]);
	rate = atol(argv[4]);
	/* Sleep at most every ~100 us: finer pacing costs more in sleeps than it gains in evenness. */
	batch = rate > 10000 ? rate / 10000 : 1;
	start = now_ns();
	for (i = 0; i < count; i++) {
		int fd;

		if (rate > 0 && i % batch == 0)
			sleep_until(start + (long long)((double)i * 1e9 / (double)rate));
		fd = open(argv[2], O_RDONLY);
		if (fd < 0) {
			perror(argv[2]);
			return 1;
		}
		close(fd);
	}
	elapsed = now_ns() - start;
	printf("{\"op\": \"open\", \"count\": %ld, \"rate_target\": %ld, \"elapsed_ns\": %lld, \"rate\": %.1f}\n",
	       count, rate, elapsed, count / (elapsed / 1e9));
	return 0;
}
