// SPDX-License-Identifier: MIT OR GPL-2.0-only
/*
 * Bench-only build of the redirect program (`cargo xtask bench dataplane`): the
 * same code with REDIRECTOR_BENCH defined, which undoes the GRE encapsulation
 * at the end of each run. BPF_PROG_TEST_RUN with repeat > 1 runs every
 * repetition on the same buffer; without the undo, every run after the first
 * would see its own GRE output and take another path. Never attach it.
 */
#define REDIRECTOR_BENCH 1
#include "redirect.c"
