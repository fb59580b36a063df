/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * blkdebug rules in QEMU's syntax (block/blkdebug-rules.c): the
 * [inject-error] and [set-state] sections of a config file or of
 * inject-error.N.* / set-state.N.* options, and the event names a rule
 * may name.  block/blkdebug.c runs them.
 */
#ifndef STRATA_BLKDEBUG_RULES_H
#define STRATA_BLKDEBUG_RULES_H

#include "block/block.h"

typedef enum {
    BLKDBG_IO_READ,
    BLKDBG_IO_WRITE,
    BLKDBG_IO_WRITE_ZEROES,
    BLKDBG_IO_DISCARD,
    BLKDBG_IO_FLUSH,
    BLKDBG_IO_BLOCK_STATUS,
} BlkdebugIOType;

typedef enum {
    BLKDBG_RULE_INJECT_ERROR,
    BLKDBG_RULE_SET_STATE,
} BlkdebugRuleAction;

typedef struct BlkdebugRule {
    char *event;
    BlkdebugRuleAction action;
    int64_t state;              /* 0: in any state */
    /* inject-error */
    uint64_t iotype_mask;       /* 1 << BlkdebugIOType */
    int error;                  /* 0: the rule matches but fails nothing */
    bool once;
    bool immediately;
    int64_t offset;             /* sector * 512, or -1 for any */
    /* set-state */
    int64_t new_state;
} BlkdebugRule;

/* Whether name is an event a format announces (QEMU's BlkdebugEvent
 * names, and strata's own snapshot_* points). */
bool blkdebug_event_known(const char *name);
/* strata's own names only: rules naming them keep strata's older meaning
 * when given as a bare inject-error.event= (see block/blkdebug.c). */
bool blkdebug_event_is_strata(const char *name);

/* Reads a QEMU-format config file's rules into rules (BlkdebugRule *,
 * in file order). */
bool blkdebug_read_config(const char *path, GPtrArray *rules, GError **errp);

/* Takes the inject-error.N.* / set-state.N.* options (and a single
 * unnumbered section, inject-error.event=...) out of options into rules. */
bool blkdebug_take_rule_options(BlockOpts *options, GPtrArray *rules,
                                GError **errp);

void blkdebug_rule_free(BlkdebugRule *rule);

#endif
