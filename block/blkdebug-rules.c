/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * blkdebug rules in QEMU's syntax: a config file in QEMU's ini format
 *
 *   [inject-error]
 *   event = "l2_load"
 *   errno = "28"
 *   once = "on"
 *
 *   [set-state]
 *   event = "l2_update"
 *   state = "1"
 *   new_state = "2"
 *
 * or the same keys as options (inject-error.0.event=l2_load, or one
 * unnumbered section inject-error.event=l2_load), with QEMU's messages for
 * what is wrong in them.  What a rule does is block/blkdebug.c's business.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "block/blkdebug-rules.h"

/* QEMU 7.2's BlkdebugEvent names, in its order, then strata's own. */
static const char *const qemu_events[] = {
    "l1_update", "l1_grow_alloc_table", "l1_grow_write_table",
    "l1_grow_activate_table", "l2_load", "l2_update", "l2_update_compressed",
    "l2_alloc_cow_read", "l2_alloc_write", "read_aio", "read_backing_aio",
    "read_compressed", "write_aio", "write_compressed", "vmstate_load",
    "vmstate_save", "cow_read", "cow_write", "reftable_load",
    "reftable_grow", "reftable_update", "refblock_load", "refblock_update",
    "refblock_update_part", "refblock_alloc", "refblock_alloc_hookup",
    "refblock_alloc_write", "refblock_alloc_write_blocks",
    "refblock_alloc_write_table", "refblock_alloc_switch_table",
    "cluster_alloc", "cluster_alloc_bytes", "cluster_free", "flush_to_os",
    "flush_to_disk", "pwritev_rmw_head", "pwritev_rmw_after_head",
    "pwritev_rmw_tail", "pwritev_rmw_after_tail", "pwritev", "pwritev_zero",
    "pwritev_done", "empty_image_prepare", "l1_shrink_write_table",
    "l1_shrink_free_l2_clusters", "cor_write", "cluster_alloc_space", "none",
    NULL
};

static const char *const strata_events[] = {
    "snapshot_refs_up", "snapshot_l1_write", "snapshot_table_write",
    "snapshot_header_update", "snapshot_refs_down", "snapshot_done", NULL
};

static const char *const iotype_names[] = {
    "read", "write", "write-zeroes", "discard", "flush", "block-status",
    NULL
};

static const char *const inject_keys[] = {
    "event", "state", "iotype", "errno", "sector", "once", "immediately",
    NULL
};

static const char *const set_state_keys[] = {
    "event", "state", "new_state", NULL
};

static int name_index(const char *const *names, const char *name)
{
    for (int i = 0; names[i]; i++) {
        if (!strcmp(names[i], name)) {
            return i;
        }
    }
    return -1;
}

bool blkdebug_event_is_strata(const char *name)
{
    return name_index(strata_events, name) >= 0;
}

bool blkdebug_event_known(const char *name)
{
    return name_index(qemu_events, name) >= 0 ||
           blkdebug_event_is_strata(name);
}

void blkdebug_rule_free(BlkdebugRule *rule)
{
    if (rule) {
        g_free(rule->event);
        g_free(rule);
    }
}

/* One section as read: its kind and its keys, not yet checked. */
typedef struct Section {
    BlkdebugRuleAction action;
    BlockOpts *keys;
} Section;

static void section_free(gpointer p)
{
    Section *sec = p;

    g_hash_table_unref(sec->keys);
    g_free(sec);
}

static const char *section_name(BlkdebugRuleAction action)
{
    return action == BLKDBG_RULE_INJECT_ERROR ? "inject-error" : "set-state";
}

static const char *const *section_keys(BlkdebugRuleAction action)
{
    return action == BLKDBG_RULE_INJECT_ERROR ? inject_keys : set_state_keys;
}

/* A number key of a rule section (checked before, see below). */
static int64_t get_number(BlockOpts *keys, const char *key, int64_t def)
{
    uint64_t n;

    bdrv_opts_get_number(keys, key, (uint64_t)def, &n, NULL);
    return (int64_t)n;
}

/* Checks the types of the keys a section knows, as QEMU does when it
 * takes them in, so a bad value is reported before a missing event. */
static bool section_check_types(Section *sec, GError **errp)
{
    static const char *const numbers[] = {
        "state", "errno", "sector", "new_state", NULL
    };
    static const char *const bools[] = { "once", "immediately", NULL };
    uint64_t n;
    bool b;

    for (int i = 0; numbers[i]; i++) {
        if (!bdrv_opts_get_number(sec->keys, numbers[i], 0, &n, errp)) {
            return false;
        }
    }
    for (int i = 0; bools[i]; i++) {
        if (!bdrv_opts_get_bool(sec->keys, bools[i], false, &b, errp)) {
            return false;
        }
    }
    return true;
}

static BlkdebugRule *section_to_rule(Section *sec, GError **errp)
{
    g_autoptr(GError) local_err = NULL;
    const char *event = bdrv_opts_get(sec->keys, "event");
    const char *iotype = bdrv_opts_get(sec->keys, "iotype");
    BlkdebugRule *rule;
    int64_t n;
    bool b;

    if (!event) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Missing event name for rule");
        return NULL;
    }
    if (!blkdebug_event_known(event)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "invalid parameter value: %s", event);
        return NULL;
    }
    rule = g_new0(BlkdebugRule, 1);
    rule->event = g_strdup(event);
    rule->action = sec->action;
    rule->state = get_number(sec->keys, "state", 0);
    if (sec->action == BLKDBG_RULE_SET_STATE) {
        rule->new_state = get_number(sec->keys, "new_state", 0);
        return rule;
    }
    rule->error = (int)get_number(sec->keys, "errno", EIO);
    bdrv_opts_get_bool(sec->keys, "once", false, &b, NULL);
    rule->once = b;
    bdrv_opts_get_bool(sec->keys, "immediately", false, &b, NULL);
    rule->immediately = b;
    n = get_number(sec->keys, "sector", -1);
    rule->offset = n == -1 ? -1 : n * BDRV_SECTOR_SIZE;
    if (iotype) {
        int i = name_index(iotype_names, iotype);
        if (i < 0) {
            blkdebug_rule_free(rule);
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "invalid parameter value: %s", iotype);
            return NULL;
        }
        rule->iotype_mask = 1ull << i;
    } else {
        /* QEMU's default: everything but block-status */
        rule->iotype_mask = (1ull << BLKDBG_IO_READ) |
                            (1ull << BLKDBG_IO_WRITE) |
                            (1ull << BLKDBG_IO_WRITE_ZEROES) |
                            (1ull << BLKDBG_IO_DISCARD) |
                            (1ull << BLKDBG_IO_FLUSH);
    }
    return rule;
}

/*
 * Turns sections into rules in QEMU's order: every inject-error section
 * first, then every set-state one, each kind in the order given.  The
 * runner walks the list backwards, which is the order QEMU processes the
 * rules of one event in.
 */
static bool sections_to_rules(GPtrArray *sections, GPtrArray *rules,
                              GError **errp)
{
    for (int pass = 0; pass < 2; pass++) {
        BlkdebugRuleAction want = pass ? BLKDBG_RULE_SET_STATE
                                       : BLKDBG_RULE_INJECT_ERROR;
        for (guint i = 0; i < sections->len; i++) {
            Section *sec = g_ptr_array_index(sections, i);
            BlkdebugRule *rule;

            if (sec->action != want) {
                continue;
            }
            rule = section_to_rule(sec, errp);
            if (!rule) {
                return false;
            }
            g_ptr_array_add(rules, rule);
        }
    }
    return true;
}

/* ---- the config file ---- */

/* A section ends: check that QEMU knows its group and its keys. */
static bool config_close_section(const char *group, BlockOpts *keys,
                                 GPtrArray *sections, GError **errp)
{
    Section *sec;
    GHashTableIter it;
    gpointer k;

    if (!strcmp(group, "inject-error")) {
        sec = g_new0(Section, 1);
        sec->action = BLKDBG_RULE_INJECT_ERROR;
    } else if (!strcmp(group, "set-state")) {
        sec = g_new0(Section, 1);
        sec->action = BLKDBG_RULE_SET_STATE;
    } else {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "There is no option group '%s'", group);
        return false;
    }
    sec->keys = g_hash_table_ref(keys);
    g_ptr_array_add(sections, sec);
    g_hash_table_iter_init(&it, keys);
    while (g_hash_table_iter_next(&it, &k, NULL)) {
        if (name_index(section_keys(sec->action), k) < 0) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "Invalid parameter '%s'", (char *)k);
            return false;
        }
    }
    return section_check_types(sec, errp);
}

/*
 * One "key = "value"" line.  Like QEMU, a first word without a quoted
 * value after '=' is a key with an empty value (so an unquoted value
 * reaches the rule as ""), and a line without any word is a parse error.
 */
static bool config_parse_pair(const char *line, char **key, char **value)
{
    const char *p = line, *start;

    while (g_ascii_isspace(*p)) {
        p++;
    }
    if (!*p) {
        return false;
    }
    start = p;
    while (*p && !g_ascii_isspace(*p)) {
        p++;
    }
    *key = g_strndup(start, MIN(p - start, 63));
    *value = g_strdup("");
    while (g_ascii_isspace(*p)) {
        p++;
    }
    if (*p != '=') {
        return true;
    }
    p++;
    while (g_ascii_isspace(*p)) {
        p++;
    }
    if (*p == '"' && strchr(p + 1, '"')) {
        g_free(*value);
        *value = g_strndup(p + 1, strchr(p + 1, '"') - (p + 1));
    }
    return true;
}

static bool config_parse_lines(char **lines, GPtrArray *sections,
                               GError **errp)
{
    g_autofree char *group = NULL;
    g_autoptr(GHashTable) keys = NULL;

    for (int i = 0; lines[i]; i++) {
        const char *line = lines[i];
        g_autofree char *key = NULL, *value = NULL;

        if (!*line || line[0] == '#') {
            continue;
        }
        if (line[0] == '[' && line[1] && line[1] != ']' &&
            strchr(line, ']')) {
            const char *end = strchr(line, ']');
            const char *sp = strpbrk(line + 1, " \t");
            if (group && !config_close_section(group, keys, sections, errp)) {
                return false;
            }
            g_free(group);
            /* [group "id"]: the id does not matter to blkdebug */
            group = g_strndup(line + 1, ((sp && sp < end) ? sp : end) -
                                        (line + 1));
            g_clear_pointer(&keys, g_hash_table_unref);
            keys = bdrv_opts_new();
            continue;
        }
        if (!config_parse_pair(line, &key, &value)) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC, "parse error");
            return false;
        }
        if (!group) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "no group defined");
            return false;
        }
        bdrv_opts_set(keys, key, value);
    }
    return !group || config_close_section(group, keys, sections, errp);
}

bool blkdebug_read_config(const char *path, GPtrArray *rules, GError **errp)
{
    g_autofree char *text = NULL;
    g_auto(GStrv) lines = NULL;
    g_autoptr(GPtrArray) sections = g_ptr_array_new_with_free_func(
        section_free);
    g_autoptr(GError) local_err = NULL;
    gsize len;

    if (!g_file_get_contents(path, &text, &len, &local_err)) {
        int err = local_err->code == G_FILE_ERROR_NOENT ? ENOENT :
                  local_err->code == G_FILE_ERROR_ACCES ? EACCES :
                  local_err->code == G_FILE_ERROR_ISDIR ? EISDIR : EIO;
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Could not read blkdebug config file: %s",
                    g_strerror(err));
        return false;
    }
    lines = g_strsplit(text, "\n", -1);
    return config_parse_lines(lines, sections, errp) &&
           sections_to_rules(sections, rules, errp);
}

/* ---- options ---- */

/* Whether every key is "N.rest" with N a number. */
static bool keys_all_numbered(BlockOpts *sub, bool *any_numbered)
{
    GHashTableIter it;
    gpointer k;
    bool all = true;

    *any_numbered = false;
    g_hash_table_iter_init(&it, sub);
    while (g_hash_table_iter_next(&it, &k, NULL)) {
        const char *p = k;
        while (g_ascii_isdigit(*p)) {
            p++;
        }
        if (p != (const char *)k && *p == '.') {
            *any_numbered = true;
        } else {
            all = false;
        }
    }
    return all;
}

/* Checks one section given as options against its kind's keys. */
static bool options_section(BlkdebugRuleAction action, BlockOpts *keys,
                            GPtrArray *sections, GError **errp)
{
    Section *sec = g_new0(Section, 1);
    GHashTableIter it;
    gpointer k;

    sec->action = action;
    sec->keys = g_hash_table_ref(keys);
    g_ptr_array_add(sections, sec);
    if (!section_check_types(sec, errp)) {
        return false;
    }
    g_hash_table_iter_init(&it, keys);
    while (g_hash_table_iter_next(&it, &k, NULL)) {
        if (name_index(section_keys(action), k) < 0) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "[%s] section doesn't support the option '%s'",
                        section_name(action), (char *)k);
            return false;
        }
    }
    return true;
}

static bool options_group(BlockOpts *options, BlkdebugRuleAction action,
                          GPtrArray *sections, GError **errp)
{
    g_autoptr(GHashTable) sub = bdrv_opts_extract_prefix(
        options, section_name(action));
    bool any_numbered;

    if (g_hash_table_size(sub) == 0) {
        return true;
    }
    if (!keys_all_numbered(sub, &any_numbered)) {
        if (any_numbered) {
            GHashTableIter it;
            gpointer k;
            g_hash_table_iter_init(&it, sub);
            while (g_hash_table_iter_next(&it, &k, NULL)) {
                if (g_ascii_isdigit(*(char *)k)) {
                    g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                                "Unknown option '%s' for [%s]", (char *)k,
                                section_name(action));
                    return false;
                }
            }
        }
        return options_section(action, sub, sections, errp);
    }
    /* inject-error.0.*, inject-error.1.*, ... in index order, no gaps */
    for (guint i = 0;; i++) {
        g_autofree char *prefix = g_strdup_printf("%u", i);
        g_autoptr(GHashTable) keys = bdrv_opts_extract_prefix(sub, prefix);
        if (g_hash_table_size(keys) == 0) {
            break;
        }
        if (!options_section(action, keys, sections, errp)) {
            return false;
        }
    }
    if (g_hash_table_size(sub)) {
        GHashTableIter it;
        gpointer k;
        g_hash_table_iter_init(&it, sub);
        g_hash_table_iter_next(&it, &k, NULL);
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Unused option '%s' for [%s]", (char *)k,
                    section_name(action));
        return false;
    }
    return true;
}

bool blkdebug_take_rule_options(BlockOpts *options, GPtrArray *rules,
                                GError **errp)
{
    g_autoptr(GPtrArray) sections = g_ptr_array_new_with_free_func(
        section_free);

    return options_group(options, BLKDBG_RULE_INJECT_ERROR, sections,
                         errp) &&
           options_group(options, BLKDBG_RULE_SET_STATE, sections, errp) &&
           sections_to_rules(sections, rules, errp);
}
