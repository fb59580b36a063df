/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A one-word wake-up between threads (Linux futex), for completions that
 * arrive on a thread of a library we do not own (librbd's): the waker's
 * last touch of the word is the wake syscall, which names the address
 * only, so the waiter may return and drop the memory as soon as it sees
 * the new value.  A GCond cannot promise that (g_cond_signal writes to the
 * condition variable), and waking under a mutex makes the woken thread
 * block again on that mutex.
 */
#ifndef STRATA_BLOCK_FUTEX_H
#define STRATA_BLOCK_FUTEX_H

#include <linux/futex.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Sleeps while *word == expected (returns at once otherwise; wake-ups
 * may be spurious: callers re-check their condition). */
static inline void strata_futex_wait(atomic_uint *word, unsigned expected)
{
    syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

/* Wakes one thread sleeping on word. */
static inline void strata_futex_wake(atomic_uint *word)
{
    syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

#endif
