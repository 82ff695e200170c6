// SPDX-License-Identifier: MIT OR GPL-2.0-only
/*
 * Floor build of the redirect program (`cargo xtask bench dataplane`): the
 * bench build (undo included, see redirect_bench.c) with classify() replaced
 * by a fixed decision, bucket 0 of the best service. Its test-run time is the
 * cost of everything the redirect path does besides classification, so the
 * benchmark can tell how much of a ratio classification is and how low any
 * ratio can go on the machine. Never attach it.
 */
#define REDIRECTOR_BENCH 1
#define REDIRECTOR_BENCH_FLOOR 1
#include "redirect.c"
