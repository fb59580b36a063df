/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The entry points of the qcow2 fuzz target, in libFuzzer's names, shared
 * by the libFuzzer build and the stand-alone replay / AFL++ driver.
 */
#ifndef STRATA_FUZZ_QCOW2_H
#define STRATA_FUZZ_QCOW2_H

#include <stddef.h>
#include <stdint.h>

/* One-time set-up (temp dir, options from the environment); called by
 * libFuzzer, by the driver, or lazily by the first input. */
int LLVMFuzzerInitialize(int *argc, char ***argv);
/* Runs one input; aborts when an oracle fails. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
