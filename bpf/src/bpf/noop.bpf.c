// SPDX-License-Identifier: GPL-2.0
/* A program that does nothing: the benchmark attaches it to a tracepoint to measure what a
 * hit costs the traced thread before the extractor does any work (the floor). */
#include <stdbool.h>
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/usdt.bpf.h>

char LICENSE[] SEC("license") = "GPL";

SEC("usdt")
int noop(struct pt_regs *ctx)
{
	return 0;
}
