/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * strata-img amend: changes the options of an existing image, like
 * qemu-img amend -o compat=..,lazy_refcounts=..,size=..: the option list
 * the format accepts for amending (a creation-only option gets qemu-img's
 * hint), -o help, and the texts and order of qemu-img's checks.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "img-common.h"
#include "img-create-opts.h"

enum { OPT_FORCE = 512 };

typedef struct {
    const char *name;
    const char *help;
} AmendOpt;

/* qcow2's amend options, in the order qemu-img prints them. */
static const AmendOpt qcow2_amend_opts[] = {
    { "backing_file=<str>", "File name of a base image" },
    { "backing_fmt=<str>", "Image format of the base image" },
    { "compat=<str>", "Compatibility level (v2 [0.10] or v3 [1.1])" },
    { "data_file=<str>", "File name of an external data file" },
    { "data_file_raw=<bool (on/off)>",
      "The external data file must stay valid as a raw image" },
    { "encrypt.iter-time=<num>", "Time to spend in PBKDF in milliseconds" },
    { "encrypt.keyslot=<num>", "Select a single keyslot to modify explicitly" },
    { "encrypt.new-secret=<str>",
      "New secret to set in the matching keyslots. Empty string to erase" },
    { "encrypt.old-secret=<str>",
      "Select all keyslots that match this password" },
    { "encrypt.state=<str>",
      "Select new state of affected keyslots (active/inactive)" },
    { "lazy_refcounts=<bool (on/off)>", "Postpone refcount updates" },
    { "refcount_bits=<num>", "Width of a reference count entry in bits" },
    { "size=<size>", "Virtual disk size" },
    { NULL, NULL },
};

static bool is_amend_option(const char *key)
{
    size_t len = strlen(key);

    for (const AmendOpt *o = qcow2_amend_opts; o->name; o++) {
        if (!strncmp(o->name, key, len) && o->name[len] == '=') {
            return true;
        }
    }
    return false;
}

/* QEMU's formats that strata lacks, none of which can amend: qemu-img
 * names them in its refusal rather than calling them unknown. */
static const char *const qemu_only_formats[] = {
    "bochs", "cloop", "dmg", "parallels", "qcow", "qed", "vdi", "vhdx",
    "vmdk", "vpc", "vvfat", NULL,
};

static bool is_qemu_only_format(const char *fmt)
{
    for (int i = 0; qemu_only_formats[i]; i++) {
        if (!strcmp(fmt, qemu_only_formats[i])) {
            return true;
        }
    }
    return false;
}

static int print_amend_help(const char *fmt)
{
    if (strcmp(fmt, "qcow2")) {
        if (!bdrv_find_format(fmt) && !is_qemu_only_format(fmt)) {
            img_error("Unknown file format '%s'", fmt);
        } else {
            img_error("Format driver '%s' does not support option amendment",
                      fmt);
        }
        return 1;
    }
    printf("Amend options for '%s':\n", fmt);
    for (const AmendOpt *o = qcow2_amend_opts; o->name; o++) {
        printf("  %-22s - %s\n", o->name, o->help);
    }
    return 0;
}

/* LUKS key-slot options: amend has them, create does not. */
static bool is_key_slot_option(const char *name)
{
    static const char *const names[] = {
        "encrypt.state", "encrypt.keyslot", "encrypt.new-secret",
        "encrypt.old-secret", NULL,
    };

    for (int i = 0; names[i]; i++) {
        if (!strcmp(name, names[i])) {
            return true;
        }
    }
    return false;
}

/* The options the create table checks and normalises, plus the key-slot
 * options as given. */
static BlockOpts *amend_block_opts(ImgCreateOpts *co, const char *options,
                                   GHashTable *keys)
{
    g_autoptr(GError) err = NULL;
    BlockOpts *out;
    GHashTableIter it;
    gpointer k, v;

    if (!img_create_opts_parse_except(co, options, is_key_slot_option,
                                      &err)) {
        img_error("%s", err->message);
        return NULL;
    }
    out = img_create_opts_to_block_opts(co);
    g_hash_table_iter_init(&it, keys);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        if (is_key_slot_option(k)) {
            bdrv_opts_set(out, k, v);
        }
    }
    return out;
}

/*
 * The -o list as the driver takes it (values normalised as for create),
 * or NULL after qemu-img's message: an unknown name, a creation-only
 * one (with the hint) or a bad value.
 */
static BlockOpts *parse_amend_options(const char *fmt, const char *options)
{
    g_autoptr(ImgCreateOpts) co = NULL;
    g_autoptr(GHashTable) keys = bdrv_opts_new();
    g_autoptr(GError) err = NULL;
    GHashTableIter it;
    gpointer k;

    co = img_create_opts_new(fmt, &err);
    if (!co || !bdrv_opts_parse(keys, options, NULL, &err)) {
        img_error("%s", err->message);
        return NULL;
    }
    g_hash_table_iter_init(&it, keys);
    while (g_hash_table_iter_next(&it, &k, NULL)) {
        if (!is_amend_option(k)) {
            g_autoptr(ImgCreateOpts) probe = img_create_opts_new(fmt, NULL);
            bool creation = probe &&
                            img_create_opts_parse(probe, options, NULL);
            img_error("Invalid parameter '%s'%s", (const char *)k,
                      creation ? "\nThis option is only supported for "
                                 "image creation" : "");
            return NULL;
        }
    }
    return amend_block_opts(co, options, keys);
}

static void amend_status(BlockDriverState *bs, int64_t done, int64_t total,
                         void *opaque)
{
    img_progress_print(100.f * done / total, 0);
}

int img_amend(int argc, char **argv)
{
    static const struct option long_options[] = {
        { "help", no_argument, NULL, 'h' },
        { "object", required_argument, NULL, OPT_OBJECT },
        { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
        { "force", no_argument, NULL, OPT_FORCE },
        { NULL, 0, NULL, 0 },
    };
    ImgCommonOpts o = IMG_COMMON_OPTS_INIT(BDRV_O_RDWR);
    g_autofree char *options = NULL;
    g_autoptr(BlockDriverState) bs = NULL;
    g_autoptr(GHashTable) opts = NULL;
    g_autoptr(GError) err = NULL;
    bool progress = false, force = false;
    const char *filename;
    int c, ret;

    while ((c = getopt_long(argc, argv, ":ho:f:t:pq", long_options,
                            NULL)) != -1) {
        switch (c) {
        case 'o':
            if (!img_add_option_list(&options, optarg)) {
                return 1;
            }
            break;
        case 't':
            o.cache = optarg;
            break;
        case 'p':
            progress = true;
            break;
        case OPT_FORCE:
            force = true;
            break;
        default:
            img_common_opt(c, argv, &o);
            break;
        }
    }
    if (!options) {
        img_error_exit("Must specify options (-o)");
    }
    filename = optind == argc - 1 ? argv[argc - 1] : NULL;
    if (o.fmt && img_has_help_option(options)) {
        return print_amend_help(o.fmt);
    }
    if (!filename) {
        img_error("Expecting one image file name");
        return 1;
    }
    if (!img_common_apply_cache(&o, "cache")) {
        return 1;
    }
    bs = img_open_common(&o, filename, 0);
    if (!bs) {
        return 1;
    }
    if (img_has_help_option(options)) {
        return print_amend_help(bdrv_get_format_name(bs));
    }
    if (!bdrv_supports_amend(bs)) {
        img_error("Format driver '%s' does not support option amendment",
                  bdrv_get_format_name(bs));
        return 1;
    }
    opts = parse_amend_options(bdrv_get_format_name(bs), options);
    if (!opts) {
        return 1;
    }
    img_progress_init(progress && !o.quiet, 1.0);
    img_progress_print(0.f, 0);
    ret = bdrv_amend(bs, opts, force, amend_status, NULL, &err);
    img_progress_print(100.f, 0);
    img_progress_end();
    if (ret < 0) {
        img_error("%s", err->message);
        return 1;
    }
    return 0;
}
