/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Nodes: driver registry, probing, open/close with reference counting,
 * node names, backing chains and reopen.  I/O lives in block/io.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/backing.h"
#include "block/block_int.h"
#include "byteorder.h"
#include "block/drivers.h"
#include "block/filename.h"

static GPtrArray *drivers;
static GMutex nodes_lock;
static GList *all_nodes;          /* every open node, under nodes_lock */
static unsigned next_node_number;

void bdrv_register(BlockDriver *drv)
{
    if (!drivers) {
        drivers = g_ptr_array_new();
    }
    g_ptr_array_add(drivers, drv);
}

static void bdrv_init_once(void)
{
    static gsize done;

    if (g_once_init_enter(&done)) {
        bdrv_register_all();
        g_once_init_leave(&done, 1);
    }
}

BlockDriver *bdrv_find_format(const char *format_name)
{
    bdrv_init_once();
    for (guint i = 0; i < drivers->len; i++) {
        BlockDriver *drv = g_ptr_array_index(drivers, i);
        if (!strcmp(drv->format_name, format_name)) {
            return drv;
        }
    }
    return NULL;
}

const char *const *bdrv_format_names(void)
{
    static const char **names;
    static gsize done;

    bdrv_init_once();
    if (g_once_init_enter(&done)) {
        names = g_new0(const char *, drivers->len + 1);
        for (guint i = 0; i < drivers->len; i++) {
            names[i] = ((BlockDriver *)g_ptr_array_index(drivers, i))->format_name;
        }
        g_once_init_leave(&done, 1);
    }
    return names;
}

BlockDriver *bdrv_probe_all(const uint8_t *buf, int buf_size,
                            const char *filename)
{
    int best = 0;
    BlockDriver *best_drv = NULL;

    bdrv_init_once();
    for (guint i = 0; i < drivers->len; i++) {
        BlockDriver *drv = g_ptr_array_index(drivers, i);
        if (drv->probe && !drv->is_protocol) {
            int score = drv->probe(buf, buf_size, filename);
            if (score > best) {
                best = score;
                best_drv = drv;
            }
        }
    }
    return best_drv;
}

/*
 * Formats QEMU 7.2 probes that strata has no driver for.  They matter for
 * the block-0 rule only: an image strata guards as raw may later be
 * opened by QEMU, which must not find one of these headers there either
 * (a vmdk descriptor names extent files, qcow and qed name backing files:
 * any host file).  Each test is the condition under which QEMU's probe
 * for that format scores above raw's 1, on a zero-padded 512-byte block.
 */
/* vmdk text descriptor: blank or comment lines, then "version=1|2|3"
 * ending in LF or CRLF. */
static bool looks_like_vmdk_descriptor(const uint8_t *buf, int size)
{
    const char *p = (const char *)buf, *end = p + size;

    while (p < end) {
        if (*p == '#') {
            while (p < end && *p != '\n') {
                p++;
            }
            p++;
            continue;
        }
        if (*p == ' ') {
            while (p < end && *p == ' ') {
                p++;
            }
            if (p < end && *p == '\r') {
                p++;
            }
            if (p == end || *p != '\n') {
                return false;
            }
            p++;
            continue;
        }
        if (end - p >= 10 && !strncmp(p, "version=", 8) &&
            p[8] >= '1' && p[8] <= '3' &&
            (p[9] == '\n' || (end - p >= 11 && p[9] == '\r' &&
                              p[10] == '\n'))) {
            return true;
        }
        return false;
    }
    return false;
}

const char *bdrv_probe_foreign(const uint8_t *buf, int size)
{
    static const char cloop_v2[] =
        "#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t "
        "iso9660 /dev/cloop $1\n";

    if (size < 8) {
        return NULL;
    }
    if (size >= 48 && be32_read(buf) == 0x514649fb && be32_read(buf + 4) == 1) {
        return "qcow";
    }
    if (size >= 64 && !memcmp(buf, "QED", 4)) {
        return "qed";
    }
    if (!memcmp(buf, "COWD", 4) || !memcmp(buf, "KDMV", 4) ||
        looks_like_vmdk_descriptor(buf, size)) {
        return "vmdk";
    }
    if (size >= 512 && le32_read(buf + 64) == 0xbeda107f) {
        return "vdi";
    }
    if (!memcmp(buf, "conectix", 8)) {
        return "vpc";
    }
    if (!memcmp(buf, "vhdxfile", 8)) {
        return "vhdx";
    }
    if (size >= 64 && (!memcmp(buf, "WithoutFreeSpace", 16) ||
                       !memcmp(buf, "WithouFreSpacExt", 16)) &&
        le32_read(buf + 16) == 2) {
        return "parallels";
    }
    if (!memcmp(buf, "LUKS\xba\xbe", 6) && buf[6] == 0 && buf[7] == 1) {
        return "luks";
    }
    if (size >= 512 && !strcmp((const char *)buf, "Bochs Virtual HD Image") &&
        !strcmp((const char *)buf + 32, "Redolog") &&
        !strcmp((const char *)buf + 48, "Growing") &&
        (le32_read(buf + 64) == 0x00020000 || le32_read(buf + 64) == 0x00010000)) {
        return "bochs";
    }
    if (size >= (int)sizeof(cloop_v2) - 1 &&
        !memcmp(buf, cloop_v2, sizeof(cloop_v2) - 1)) {
        return "cloop";
    }
    return NULL;
}

/*
 * Picks the format of the image in file.  Always exactly
 * BDRV_PROBE_BUF_SIZE bytes are probed, padded with zeroes, so the answer
 * depends only on block 0: that is what lets a probed raw node keep its
 * format by vetting writes to block 0 alone.  An empty file is raw
 * without a look, as in QEMU.
 */
static BlockDriver *bdrv_probe(BlockDriverState *file, GError **errp)
{
    uint8_t buf[BDRV_PROBE_BUF_SIZE] = { 0 };
    int64_t len = bdrv_getlength(file);
    BlockDriver *drv;
    const char *foreign;
    int ret;

    if (len < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not determine image size: %s", g_strerror(-len));
        return NULL;
    }
    if (len == 0) {
        return bdrv_find_format("raw");
    }
    ret = bdrv_pread(file, 0, sizeof(buf), buf);
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not read image for determining its format: %s",
                    g_strerror(-ret));
        return NULL;
    }
    drv = bdrv_probe_all(buf, sizeof(buf), file->filename);
    if (!drv) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Could not determine image format: No compatible driver "
                    "found");
        return NULL;
    }
    /* QEMU would open this as a format we lack; reading it as raw would
     * silently show its metadata as guest data.  Say so instead. */
    foreign = bdrv_probe_foreign(buf, sizeof(buf));
    if (drv->probe(buf, sizeof(buf), file->filename) <= 1 && foreign) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "Image is in '%s' format, which is not supported; "
                    "specify the format explicitly to open it as raw",
                    foreign);
        return NULL;
    }
    return drv;
}

static BlockDriverState *bdrv_new(void)
{
    BlockDriverState *bs = g_new0(BlockDriverState, 1);

    bs->refcnt = 1;
    bs->request_alignment = 1;
    bs->buf_alignment = 1;
    g_mutex_init(&bs->lock);
    g_cond_init(&bs->cond);
    return bs;
}

static bool bdrv_assign_node_name(BlockDriverState *bs, const char *name,
                                  GError **errp)
{
    g_mutex_lock(&nodes_lock);
    if (name) {
        if (!*name || name[0] == '#' || strlen(name) > 31) {
            g_mutex_unlock(&nodes_lock);
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "Invalid node-name: '%s'", name);
            return false;
        }
        for (GList *l = all_nodes; l; l = l->next) {
            BlockDriverState *o = l->data;
            if (!strcmp(o->node_name, name)) {
                g_mutex_unlock(&nodes_lock);
                g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                            "Duplicate nodes with node-name='%s'", name);
                return false;
            }
        }
        bs->node_name = g_strdup(name);
    } else {
        bs->node_name = g_strdup_printf("#block%03u", next_node_number++);
    }
    all_nodes = g_list_prepend(all_nodes, bs);
    g_mutex_unlock(&nodes_lock);
    return true;
}

BlockDriverState *bdrv_find_node(const char *node_name)
{
    BlockDriverState *found = NULL;

    g_mutex_lock(&nodes_lock);
    for (GList *l = all_nodes; l; l = l->next) {
        BlockDriverState *bs = l->data;
        if (!strcmp(bs->node_name, node_name)) {
            found = bs;
            break;
        }
    }
    g_mutex_unlock(&nodes_lock);
    return found;
}

char *bdrv_resolve_backing_name(const char *overlay_filename,
                                const char *backing_name)
{
    const char *slash;

    const char *colon = strchr(backing_name, ':');
    const char *first_slash = strchr(backing_name, '/');

    /* "blkdebug::/a/img" names its image /a/img */
    overlay_filename = bdrv_filename_plain(overlay_filename);

    /* Absolute names and "protocol:..." names (a colon before any slash)
     * are used as they are. */
    if (g_path_is_absolute(backing_name) || !overlay_filename ||
        (colon && (!first_slash || colon < first_slash))) {
        return g_strdup(backing_name);
    }
    slash = strrchr(overlay_filename, '/');
    if (!slash) {
        return g_strdup(backing_name);
    }
    return g_strdup_printf("%.*s%s", (int)(slash - overlay_filename + 1),
                           overlay_filename, backing_name);
}

/* Identity of a host file, for loop detection along a chain. */
typedef struct ChainLink {
    dev_t dev;
    ino_t ino;
    const struct ChainLink *below_me; /* the overlay that opened us */
    int depth;
} ChainLink;

static __thread const ChainLink *opening_chain;
/* Set while an error about the chain's shape (loop, depth) travels up
 * the recursion, so each level does not prefix it again. */
static __thread bool chain_error_final;

static BlockDriverState *bdrv_open_common(const char *filename,
                                          BlockOpts *options, int flags,
                                          GError **errp);

/*
 * A backing file is a regular file: opening a FIFO would block, and a
 * device node named in an image's header (which anyone may have written)
 * must not be read as a disk.  The host_device driver opens devices only
 * where a user names them directly.
 */
bool bdrv_backing_path_allowed(const char *path, const struct stat *st,
                               GError **errp)
{
    if (S_ISDIR(st->st_mode)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Could not open backing file: '%s' is a directory", path);
        return false;
    }
    if (!S_ISREG(st->st_mode)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Could not open backing file: '%s' is not a regular file",
                    path);
        return false;
    }
    return true;
}

bool bdrv_open_backing(BlockDriverState *bs, BlockOpts *options, int flags,
                       GError **errp)
{
    const char *ref = bdrv_opts_get(options, "backing");
    g_autoptr(GHashTable) sub = NULL;
    g_autofree char *path = NULL;
    g_autoptr(GError) local_err = NULL;
    BlockOpts *bopts;
    int depth = opening_chain ? opening_chain->depth : 0;
    struct stat st;

    if (ref) {
        /* An explicit "backing" overrides the header: a node or none. */
        if (!*ref || !strcmp(ref, "null")) {
            g_hash_table_remove(options, "backing");
            return true;
        }
        BlockDriverState *node = bdrv_find_node(ref);
        if (!node) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_FOUND,
                        "Cannot find device='' nor node-name='%s'", ref);
            return false;
        }
        if (node == bs) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "Node '%s' cannot be its own backing node", ref);
            return false;
        }
        bdrv_ref(node);
        bs->backing = node;
        g_hash_table_remove(options, "backing");
        return true;
    }
    sub = bdrv_opts_extract_prefix(options, "backing");
    if (!bs->backing_file) {
        return true;
    }
    if (depth + 1 >= BDRV_MAX_CHAIN_DEPTH) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Could not open backing file: backing chain is deeper "
                    "than %d images", BDRV_MAX_CHAIN_DEPTH);
        chain_error_final = true;
        return false;
    }
    path = bdrv_resolve_backing_name(bdrv_naming_filename(bs) ?
                                     bdrv_naming_filename(bs) : bs->filename,
                                     bs->backing_file);
    if (stat(path, &st) == 0) {
        for (const ChainLink *l = opening_chain; l; l = l->below_me) {
            if (l->dev == st.st_dev && l->ino == st.st_ino) {
                g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                            "Could not open backing file: backing chain "
                            "loop: '%s' is already in the chain", path);
                chain_error_final = true;
                return false;
            }
        }
        if (!bdrv_backing_path_allowed(path, &st, errp)) {
            return false;
        }
    }
    bopts = bdrv_opts_new();
    {
        GHashTableIter it;
        gpointer k, v;
        g_hash_table_iter_init(&it, sub);
        while (g_hash_table_iter_next(&it, &k, &v)) {
            bdrv_opts_set(bopts, k, v);
        }
    }
    if (bs->backing_format && !bdrv_opts_get(bopts, "driver")) {
        bdrv_opts_set(bopts, "driver", bs->backing_format);
    }
    /* Backing images are never written through the overlay; like any
     * child, a backing image unmaps unless told otherwise (a commit job
     * writes into it). */
    bs->backing = bdrv_open_common(path, bopts,
                                   flags & ~(BDRV_O_RDWR | BDRV_O_CHECK |
                                             BDRV_O_IGNORE_DISCARD),
                                   &local_err);
    if (!bs->backing) {
        if (chain_error_final) {
            g_propagate_error(errp, g_steal_pointer(&local_err));
        } else {
            g_set_error(errp, BDRV_ERROR, local_err->code,
                        "Could not open backing file: %s",
                        local_err->message);
        }
        return false;
    }
    return true;
}

BlockDriverState *bdrv_open_file_child(const char *filename,
                                       BlockOpts *options, int flags,
                                       GError **errp)
{
    return bdrv_open_named_child(filename, options, "file", flags, errp);
}

/*
 * options[name] naming an existing node (blockdev-add's "file": "node"):
 * that node, with a new reference, shared with whoever else holds it.
 * NULL with *errp unset when the option names no node.
 */
static BlockDriverState *open_child_reference(BlockOpts *options,
                                              const char *name, int flags,
                                              GError **errp)
{
    const char *ref = bdrv_opts_get(options, name);
    BlockDriverState *node = ref ? bdrv_find_node(ref) : NULL;

    if (!node) {
        return NULL;
    }
    if (!node->drv || !node->drv->is_protocol) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Node '%s' cannot be used as '%s': strata takes only a "
                    "protocol node (file, host_device...) there", ref, name);
        return NULL;
    }
    if ((flags & BDRV_O_RDWR) && node->read_only) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Block node is read-only");
        return NULL;
    }
    bdrv_ref(node);
    g_hash_table_remove(options, name);
    return node;
}

BlockDriverState *bdrv_open_named_child(const char *filename,
                                        BlockOpts *options, const char *name,
                                        int flags, GError **errp)
{
    BlockOpts *fopts;

    if (!filename) {
        GError *err = NULL;
        BlockDriverState *node = open_child_reference(options, name, flags,
                                                      &err);
        if (node || err) {
            if (err) {
                g_propagate_error(errp, err);
            }
            return node;
        }
    }
    fopts = bdrv_opts_extract_prefix(options, name);

    /* QEMU's names: "json:{...}", "file:X", "blkdebug:C:X" (block/filename.c) */
    if (filename && g_str_has_prefix(filename, "json:")) {
        if (!bdrv_filename_merge_json(filename, fopts, errp)) {
            g_hash_table_unref(fopts);
            return NULL;
        }
        filename = NULL;
    }
    if (filename && !bdrv_opts_get(fopts, "filename") &&
        !bdrv_filename_pick_protocol(filename, fopts, errp)) {
        g_hash_table_unref(fopts);
        return NULL;
    }
    if (!bdrv_opts_get(fopts, "driver")) {
        bdrv_opts_set(fopts, "driver", "file");
    }
    /* a filter such as blkdebug may name its image with image.* instead */
    if (!filename && !bdrv_opts_get(fopts, "filename") &&
        !strcmp(bdrv_opts_get(fopts, "driver"), "file")) {
        g_hash_table_unref(fopts);
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "A block device must be specified for \"%s\"", name);
        return NULL;
    }
    /* A child unmaps unless told otherwise, as in QEMU: the parent's own
     * discard choice already filters what reaches it. */
    return bdrv_open_common(filename, fopts,
                            flags & ~(BDRV_O_NO_BACKING |
                                      BDRV_O_IGNORE_DISCARD), errp);
}

/* "discard": ignore/off or unmap/on, QEMU's words and error. */
static bool bdrv_open_discard_flag(BlockOpts *options, int *flags,
                                   GError **errp)
{
    const char *v = bdrv_opts_get(options, "discard");

    if (!v) {
        return true;
    }
    if (!strcmp(v, "ignore") || !strcmp(v, "off")) {
        *flags |= BDRV_O_IGNORE_DISCARD;
    } else if (!strcmp(v, "unmap") || !strcmp(v, "on")) {
        *flags &= ~BDRV_O_IGNORE_DISCARD;
    } else {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Invalid discard option");
        return false;
    }
    g_hash_table_remove(options, "discard");
    return true;
}

/* "detect-zeroes": off, on or unmap; unmap only where discards unmap. */
static bool bdrv_open_detect_zeroes(BlockOpts *options, int flags,
                                    BdrvDetectZeroes *dz, GError **errp)
{
    g_autofree char *v = bdrv_opts_take(options, "detect-zeroes");

    *dz = BDRV_DETECT_ZEROES_OFF;
    if (!v || !strcmp(v, "off")) {
        return true;
    }
    if (!strcmp(v, "on")) {
        *dz = BDRV_DETECT_ZEROES_ON;
    } else if (!strcmp(v, "unmap")) {
        *dz = BDRV_DETECT_ZEROES_UNMAP;
    } else {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "invalid parameter value: %s", v);
        return false;
    }
    if (*dz == BDRV_DETECT_ZEROES_UNMAP && (flags & BDRV_O_IGNORE_DISCARD)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "setting detect-zeroes to unmap is not allowed without "
                    "setting discard operation to unmap");
        return false;
    }
    return true;
}

static bool bdrv_open_cache_flags(BlockOpts *options, int *flags,
                                  GError **errp)
{
    bool direct, no_flush, ro;

    if (!bdrv_opts_get_bool(options, "cache.direct",
                            !!(*flags & BDRV_O_NOCACHE), &direct, errp) ||
        !bdrv_opts_get_bool(options, "cache.no-flush",
                            !!(*flags & BDRV_O_NO_FLUSH), &no_flush, errp) ||
        !bdrv_opts_get_bool(options, "read-only",
                            !(*flags & BDRV_O_RDWR), &ro, errp)) {
        return false;
    }
    g_hash_table_remove(options, "cache.direct");
    g_hash_table_remove(options, "cache.no-flush");
    g_hash_table_remove(options, "read-only");
    *flags = (*flags & ~(BDRV_O_NOCACHE | BDRV_O_NO_FLUSH | BDRV_O_RDWR)) |
             (direct ? BDRV_O_NOCACHE : 0) | (no_flush ? BDRV_O_NO_FLUSH : 0) |
             (ro ? 0 : BDRV_O_RDWR);
    /* Children inherit the cache modes through the flags. */
    return bdrv_open_discard_flag(options, flags, errp) &&
           bdrv_perm_parse_options(options, flags, errp);
}

static BlockDriverState *bdrv_open_common(const char *filename,
                                          BlockOpts *options, int flags,
                                          GError **errp)
{
    g_autoptr(BlockDriverState) bs = NULL;
    g_autofree char *drvname = NULL;
    g_autofree char *node_name = NULL;
    g_autofree char *owned_filename = NULL;
    g_autofree char *plain_filename = NULL;
    BlockDriver *drv = NULL;
    ChainLink link = { 0 };
    const ChainLink *saved_chain = opening_chain;
    BdrvDetectZeroes detect_zeroes;
    struct stat st;
    bool probed = false;

    bdrv_init_once();
    if (!options) {
        options = bdrv_opts_new();
    }
    /* json:{...} names are options (block/filename.c) */
    if (filename && g_str_has_prefix(filename, "json:")) {
        if (!bdrv_filename_merge_json(filename, options, errp)) {
            goto fail_opts;
        }
        filename = NULL;
    }
    flags &= ~BDRV_O_PROBED;
    if (!bdrv_open_cache_flags(options, &flags, errp) ||
        !bdrv_open_detect_zeroes(options, flags, &detect_zeroes, errp)) {
        goto fail_opts;
    }
    drvname = bdrv_opts_take(options, "driver");
    node_name = bdrv_opts_take(options, "node-name");
    if (drvname) {
        drv = bdrv_find_format(drvname);
        if (!drv) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "Unknown driver '%s'", drvname);
            goto fail_opts;
        }
    }
    if (!filename) {
        /* copied: opening the file child consumes these options */
        const char *f = bdrv_opts_get(options, "filename");
        if (!f) {
            f = bdrv_opts_get(options, "file.filename");
        }
        filename = owned_filename = g_strdup(f);
    }
    /* A protocol driver opens what its prefix leaves ("file:X" -> X) */
    if (drv && drv->is_protocol && filename) {
        if (!bdrv_filename_strip_protocol(drv->format_name, filename,
                                          options, &plain_filename, errp)) {
            goto fail_opts;
        }
        /* QEMU names a relative file that looks prefixed "./name" */
        if (!strcmp(drv->format_name, "file") &&
            bdrv_filename_has_protocol(plain_filename)) {
            g_autofree char *dotted = plain_filename;
            plain_filename = g_strconcat("./", dotted, NULL);
        }
        filename = plain_filename;
    }

    bs = bdrv_new();
    bs->open_flags = flags;
    bs->detect_zeroes = detect_zeroes;
    bs->read_only = !(flags & BDRV_O_RDWR);
    bs->filename = g_strdup(filename ? filename : "");
    if (!bdrv_assign_node_name(bs, node_name, errp)) {
        goto fail_opts;
    }

    if (!drv || !drv->is_protocol) {
        /* a file child given by reference: a node already open */
        const char *fref = filename ? NULL : bdrv_opts_get(options, "file");
        bool by_ref = fref && bdrv_find_node(fref);

        bs->file = bdrv_open_file_child(filename, options, flags, errp);
        if (!bs->file) {
            goto fail_opts;
        }
        /* "file:X" names the image X, as QEMU shows it; so does a file
         * child given by reference (no name of its own) */
        if (bdrv_local_prefix_len(bs->filename) ||
            (by_ref && !*bs->filename)) {
            g_free(bs->filename);
            bs->filename = g_strdup(bs->file->filename);
        }
        if (!drv) {
            drv = bdrv_probe(bs->file, errp);
            if (!drv) {
                goto fail_opts;
            }
            probed = true;
        }
    }

    /* Track this file for backing-loop detection while it opens. */
    if (filename && stat(filename, &st) == 0) {
        link.dev = st.st_dev;
        link.ino = st.st_ino;
    }
    link.below_me = saved_chain;
    link.depth = saved_chain ? saved_chain->depth + 1 : 0;

    bs->drv = drv;
    /* Image locks before the format reads or writes its file (qcow2 may
     * write at open); protocol drivers take theirs as they open. */
    if (bs->file && !bdrv_perm_apply(bs, flags, errp)) {
        bs->drv = NULL;
        goto fail_opts;
    }
    bs->opaque = drv->instance_size ? g_malloc0(drv->instance_size) : NULL;
    if (drv->open(bs, options, flags | (probed ? BDRV_O_PROBED : 0),
                  errp) < 0) {
        g_free(bs->opaque);
        bs->opaque = NULL;
        bs->drv = NULL;
        goto fail_opts;
    }
    if (drv->supports_backing && !(flags & BDRV_O_NO_BACKING)) {
        bool ok;
        if (!saved_chain) {
            chain_error_final = false;
        }
        opening_chain = &link;
        ok = bdrv_open_backing(bs, options, flags, errp);
        opening_chain = saved_chain;
        if (!ok) {
            goto fail_opts;
        }
    } else {
        g_hash_table_remove(options, "backing");
        g_hash_table_unref(bdrv_opts_extract_prefix(options, "backing"));
    }
    g_hash_table_remove(options, "filename");
    if (!bdrv_opts_check_empty(options, errp)) {
        goto fail_opts;
    }
    g_hash_table_unref(options);
    return g_steal_pointer(&bs);

fail_opts:
    g_hash_table_unref(options);
    return NULL;
}

BlockDriverState *bdrv_open(const char *filename, BlockOpts *options,
                            int flags, GError **errp)
{
    return bdrv_open_common(filename, options, flags, errp);
}

void bdrv_ref(BlockDriverState *bs)
{
    g_atomic_int_inc(&bs->refcnt);
}

static void bdrv_close(BlockDriverState *bs)
{
    if (bs->drv) {
        if (!bs->read_only) {
            bdrv_flush(bs);
        }
        if (bs->drv->close) {
            bs->drv->close(bs);
        }
    }
    if (bs->backing) {
        bdrv_unref(bs->backing);
    }
    if (bs->file) {
        bdrv_unref(bs->file);
    }
    g_free(bs->opaque);
}

void bdrv_unref(BlockDriverState *bs)
{
    if (!bs || !g_atomic_int_dec_and_test(&bs->refcnt)) {
        return;
    }
    bdrv_close(bs);
    g_mutex_lock(&nodes_lock);
    all_nodes = g_list_remove(all_nodes, bs);
    g_mutex_unlock(&nodes_lock);
    g_free(bs->node_name);
    g_free(bs->filename);
    g_free(bs->backing_file);
    g_free(bs->backing_format);
    if (bs->op_blockers) {
        g_ptr_array_unref(bs->op_blockers);
    }
    g_mutex_clear(&bs->lock);
    g_cond_clear(&bs->cond);
    g_free(bs);
}

static bool bdrv_reopen_node(BlockDriverState *bs, bool read_only,
                             GError **errp)
{
    if (bs->read_only == read_only) {
        return true;
    }
    bdrv_drained_begin(bs);
    /* Going read-only: the format writes back first, then its file child
     * drops write access; going read-write: the other way round. */
    if (read_only && bs->drv->reopen &&
        bs->drv->reopen(bs, true, errp) < 0) {
        goto fail;
    }
    if (bs->file && !bdrv_reopen_node(bs->file, read_only, errp)) {
        if (read_only && bs->drv->reopen) {
            bs->drv->reopen(bs, false, NULL);
        }
        goto fail;
    }
    if (!read_only && bs->drv->reopen &&
        bs->drv->reopen(bs, false, errp) < 0) {
        if (bs->file) {
            bdrv_reopen_node(bs->file, true, NULL);
        }
        goto fail;
    }
    bs->read_only = read_only;
    if (read_only) {
        bs->open_flags &= ~BDRV_O_RDWR;
    } else {
        bs->open_flags |= BDRV_O_RDWR;
    }
    bdrv_drained_end(bs);
    return true;

fail:
    bdrv_drained_end(bs);
    return false;
}

/* The node and its file children, with the image locks of the new mode:
 * write locks are taken before anything can write, dropped after. */
bool bdrv_reopen_set_read_only(BlockDriverState *bs, bool read_only,
                               GError **errp)
{
    int old_flags = bs->open_flags;
    int new_flags = read_only ? (old_flags & ~BDRV_O_RDWR)
                              : (old_flags | BDRV_O_RDWR);

    if (bs->read_only == read_only) {
        return true;
    }
    if (!read_only && (old_flags & BDRV_O_FORCE_SHARE)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "force-share=on can only be used with read-only images");
        return false;
    }
    if (!read_only && !bdrv_perm_apply(bs, new_flags, errp)) {
        return false;
    }
    if (!bdrv_reopen_node(bs, read_only, errp)) {
        if (!read_only) {
            bdrv_perm_apply(bs, old_flags, NULL);
        }
        return false;
    }
    if (read_only) {
        bdrv_perm_apply(bs, new_flags, NULL);
    }
    return true;
}

bool bdrv_reopen_options(BlockDriverState *bs, BlockOpts *opts, bool commit,
                         GError **errp)
{
    int ret;

    if (!bs->drv->reopen_options) {
        return true;
    }
    bdrv_drained_begin(bs);
    ret = bs->drv->reopen_options(bs, opts, commit, errp);
    bdrv_drained_end(bs);
    return ret == 0;
}

int bdrv_save_vmstate(BlockDriverState *bs, const void *buf, int64_t pos,
                      int64_t size)
{
    for (; bs && bs->drv; bs = bs->file) {
        if (bs->drv->save_vmstate) {
            return bs->drv->save_vmstate(bs, buf, pos, size);
        }
    }
    return -ENOTSUP;
}

int bdrv_load_vmstate(BlockDriverState *bs, void *buf, int64_t pos,
                      int64_t size)
{
    for (; bs && bs->drv; bs = bs->file) {
        if (bs->drv->load_vmstate) {
            return bs->drv->load_vmstate(bs, buf, pos, size);
        }
    }
    return -ENOTSUP;
}

static BlockOpts *opts_copy(BlockOpts *opts)
{
    BlockOpts *copy = bdrv_opts_new();
    GHashTableIter it;
    gpointer k, v;

    if (opts) {
        g_hash_table_iter_init(&it, opts);
        while (g_hash_table_iter_next(&it, &k, &v)) {
            bdrv_opts_set(copy, k, v);
        }
    }
    return copy;
}

/*
 * Creates the image once in a scratch file beside filename (same
 * directory, so relative backing names resolve alike) and deletes it:
 * whatever makes this create fail -- bad options, a size the format
 * cannot hold, a missing backing file -- is found before the existing
 * file is truncated.  Returns false with errp set if the create fails;
 * true if it works or if no scratch file can be made there (then the
 * caller goes ahead as QEMU does).
 */
static bool bdrv_create_rehearse(BlockDriver *drv, const char *filename,
                                 BlockOpts *opts, GError **errp)
{
    g_autofree char *dir = g_path_get_dirname(filename);
    g_autofree char *base = g_path_get_basename(filename);
    g_autofree char *scratch = g_strdup_printf("%s/.%s.create-XXXXXX", dir,
                                               base);
    g_autoptr(GError) local_err = NULL;
    BlockOpts *copy;
    bool ok;
    int fd = g_mkstemp(scratch);

    if (fd < 0) {
        return true;
    }
    close(fd);
    copy = opts_copy(opts);
    ok = drv->create(scratch, copy, &local_err);
    g_hash_table_unref(copy);
    unlink(scratch);
    if (!ok) {
        /* Messages name the file the user asked for, not the scratch. */
        g_autoptr(GString) msg = g_string_new(local_err->message);
        g_string_replace(msg, scratch, filename, 0);
        g_set_error_literal(errp, local_err->domain, local_err->code,
                            msg->str);
    }
    return ok;
}

/* A file that could not be made that large: QEMU's text for any create
 * that fails so, with its hint where the format has a cluster size. */
static void too_large_as_qemu(const char *fmt, BlockOpts *opts,
                              GError **err)
{
    if (!g_error_matches(*err, BDRV_ERROR, BDRV_ERROR_TOO_LARGE)) {
        return;
    }
    g_clear_error(err);
    g_set_error(err, BDRV_ERROR, BDRV_ERROR_TOO_LARGE,
                "The image size is too large for file format '%s'%s", fmt,
                /* qcow2's cluster_size always has a value (its default) */
                !strcmp(fmt, "qcow2") ||
                (opts && bdrv_opts_get(opts, "cluster_size"))
                ? " (try using a larger cluster size)" : "");
}

/*
 * A failed create changes nothing on disk: a file it created is removed,
 * and an existing file is only truncated once a rehearsal has shown the
 * create will work.  QEMU instead deletes the image file after a failed
 * create, even one that existed before (and leaves an empty file behind
 * when a raw create fails); strata leaves the disk as it found it.
 */
bool bdrv_create(const char *fmt, const char *filename, BlockOpts *opts,
                 GError **errp)
{
    BlockDriver *drv = bdrv_find_format(fmt);
    GError *local_err = NULL;
    struct stat st;
    bool existed;

    if (!drv) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Unknown file format '%s'", fmt);
        return false;
    }
    if (!drv->create) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "Format driver '%s' does not support image creation",
                    fmt);
        return false;
    }
    g_autofree char *plain = bdrv_local_path(filename);

    filename = plain;
    existed = lstat(filename, &st) == 0;
    if (existed && S_ISREG(st.st_mode) &&
        !bdrv_create_rehearse(drv, filename, opts, &local_err)) {
        goto fail;
    }
    if (!drv->create(filename, opts, &local_err)) {
        if (!existed && bdrv_create_target_is_host_file(filename)) {
            unlink(filename);
        }
        goto fail;
    }
    return true;

fail:
    too_large_as_qemu(fmt, opts, &local_err);
    g_propagate_error(errp, local_err);
    return false;
}

const char *bdrv_get_node_name(BlockDriverState *bs) { return bs->node_name; }
const char *bdrv_get_filename(BlockDriverState *bs) { return bs->filename; }
bool bdrv_is_read_only(BlockDriverState *bs) { return bs->read_only; }
/* the BDRV_O_* flags the node was opened with (QMP's cache info) */
int bdrv_get_open_flags(BlockDriverState *bs) { return bs->open_flags; }

BdrvDetectZeroes bdrv_get_detect_zeroes(BlockDriverState *bs)
{
    return bs->detect_zeroes;
}
BlockDriverState *bdrv_get_file(BlockDriverState *bs) { return bs->file; }
BlockDriverState *bdrv_get_backing(BlockDriverState *bs) { return bs->backing; }

bool bdrv_has_data_child(BlockDriverState *bs, BlockDriverState *child)
{
    return child && (bs->file == child ||
                     (bs->drv && bs->drv->has_child &&
                      bs->drv->has_child(bs, child)));
}

BlockDriverState *bdrv_backing_below(BlockDriverState *bs)
{
    /* a filter's status is its child's: look through to the child */
    while (!bs->backing && bs->drv && bs->drv->is_filter && bs->file) {
        bs = bs->file;
    }
    return bs->backing;
}

const char *bdrv_get_format_name(BlockDriverState *bs)
{
    return bs->drv ? bs->drv->format_name : NULL;
}

const char *bdrv_get_backing_filename(BlockDriverState *bs)
{
    return bs->backing_file;
}

/*
 * The file name that names next to bs are taken relative to: bs's own,
 * unless bs was named by its options (json:, --image-opts), in which case
 * the one of the node it stores its data in, down through file children
 * (qcow2 over blkdebug over a file: the file's).  NULL when no such name
 * exists (a node with no file child and no name).
 */
const char *bdrv_naming_filename(BlockDriverState *bs)
{
    for (; bs; bs = bs->file) {
        if (bs->filename && bs->filename[0] &&
            !g_str_has_prefix(bs->filename, "json:")) {
            return bs->filename;
        }
    }
    return NULL;
}

char *bdrv_get_full_backing_filename(BlockDriverState *bs)
{
    const char *base = bdrv_naming_filename(bs);

    if (!bs->backing_file) {
        return NULL;
    }
    if (!base && !g_path_is_absolute(bs->backing_file)) {
        return NULL; /* relative to nothing known: QEMU cannot tell either */
    }
    return bdrv_resolve_backing_name(base, bs->backing_file);
}

const char *bdrv_get_backing_format(BlockDriverState *bs)
{
    return bs->backing_format;
}

int64_t bdrv_getlength(BlockDriverState *bs)
{
    if (!bs->drv || !bs->drv->getlength) {
        return -ENOMEDIUM;
    }
    return bs->drv->getlength(bs);
}

int64_t bdrv_get_allocated_file_size(BlockDriverState *bs)
{
    if (bs->drv && bs->drv->get_allocated_file_size) {
        return bs->drv->get_allocated_file_size(bs);
    }
    if (bs->file) {
        return bdrv_get_allocated_file_size(bs->file);
    }
    return -ENOTSUP;
}

int bdrv_get_info(BlockDriverState *bs, BlockDriverInfo *bdi)
{
    memset(bdi, 0, sizeof(*bdi));
    if (!bs->drv || !bs->drv->get_info) {
        return -ENOTSUP;
    }
    return bs->drv->get_info(bs, bdi);
}

void bdrv_get_specific_info(BlockDriverState *bs, BlockSpecificInfo *info)
{
    memset(info, 0, sizeof(*info));
    if (bs->drv && bs->drv->get_specific_info) {
        bs->drv->get_specific_info(bs, info);
    }
}

int bdrv_check(BlockDriverState *bs, BdrvCheckResult *res, BdrvCheckMode fix)
{
    memset(res, 0, sizeof(*res));
    if (!bs->drv || !bs->drv->check) {
        return -ENOTSUP;
    }
    return bs->drv->check(bs, res, fix);
}

/* ---- Every open node, for the registry in blockdev/ (issue 8) ---- */

GPtrArray *bdrv_list_nodes(void)
{
    GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)bdrv_unref);

    g_mutex_lock(&nodes_lock);
    /* all_nodes is newest first; callers get the nodes oldest first. */
    for (GList *l = g_list_last(all_nodes); l; l = l->prev) {
        BlockDriverState *bs = l->data;
        gint ref = g_atomic_int_get(&bs->refcnt);

        /* A node whose last reference is gone stays listed until its
         * close finishes; it must not come back to life here. */
        while (ref > 0 &&
               !g_atomic_int_compare_and_exchange(&bs->refcnt, ref, ref + 1)) {
            ref = g_atomic_int_get(&bs->refcnt);
        }
        if (ref > 0) {
            g_ptr_array_add(out, bs);
        }
    }
    g_mutex_unlock(&nodes_lock);
    return out;
}

/* ---- drain and busy state, asked by block/snapshot.c, set by
 * block/blockjob.c ---- */

bool bdrv_is_drained(BlockDriverState *bs)
{
    bool drained;

    g_mutex_lock(&bs->lock);
    drained = bs->quiesce_counter > 0 && bs->drain_owner == g_thread_self();
    g_mutex_unlock(&bs->lock);
    return drained;
}

void bdrv_op_block(BlockDriverState *bs, const char *reason)
{
    g_mutex_lock(&bs->lock);
    if (!bs->op_blockers) {
        bs->op_blockers = g_ptr_array_new();
    }
    g_ptr_array_add(bs->op_blockers, (gpointer)reason);
    g_mutex_unlock(&bs->lock);
}

void bdrv_op_unblock(BlockDriverState *bs, const char *reason)
{
    g_mutex_lock(&bs->lock);
    if (bs->op_blockers) {
        g_ptr_array_remove(bs->op_blockers, (gpointer)reason);
    }
    g_mutex_unlock(&bs->lock);
}

bool bdrv_op_is_blocked(BlockDriverState *bs, GError **errp)
{
    bool blocked;

    g_mutex_lock(&bs->lock);
    blocked = bs->op_blockers && bs->op_blockers->len;
    if (blocked) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Node '%s' is busy: %s", bs->node_name,
                    (const char *)g_ptr_array_index(bs->op_blockers, 0));
    }
    g_mutex_unlock(&bs->lock);
    return blocked;
}

bool bdrv_any_node(BdrvNodePredicate *pred, void *opaque)
{
    bool found = false;

    g_mutex_lock(&nodes_lock);
    for (GList *l = all_nodes; l && !found; l = l->next) {
        found = pred(l->data, opaque);
    }
    g_mutex_unlock(&nodes_lock);
    return found;
}

/* ---- corruption notices (see block.h) ---- */

static BdrvCorruptionFunc *corruption_fn;
static void *corruption_opaque;

void bdrv_set_corruption_notifier(BdrvCorruptionFunc *fn, void *opaque)
{
    corruption_fn = fn;
    corruption_opaque = opaque;
}

void bdrv_report_corruption(BlockDriverState *bs, const char *msg,
                            bool fatal)
{
    if (corruption_fn) {
        corruption_fn(bs, msg, fatal, corruption_opaque);
    }
}
