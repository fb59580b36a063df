/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * strata-img measure: how big a new image would be, like qemu-img measure
 * (--size N or an existing image, -O format, -o options, -l snapshot;
 * human or JSON output).  The qcow2 figures follow QEMU 7.2's formula
 * (block/qcow2.c: qcow2_measure, qcow2_calc_prealloc_size): header,
 * L2 and L1 tables, refcount structures found by fixed-point iteration,
 * and the data clusters the source has allocated.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include <json-glib/json-glib.h>

#include "img-common.h"
#include "block/crypto.h"
#include "block/objects.h"
#include "block/dirty-bitmap.h"
#include "img-create-opts.h"
#include "img-json.h"
#include "block/snapshot.h"

enum { OPT_SIZE = 512 };

typedef struct {
    uint64_t required;
    uint64_t fully_allocated;
    bool has_bitmaps;
    uint64_t bitmaps;          /* bytes the source's bitmaps would take */
} MeasureInfo;

/* Bytes of refcount blocks and table to count `clusters` clusters and
 * themselves. */
static uint64_t refcount_metadata_size(uint64_t clusters, uint64_t cs,
                                       int refcount_order)
{
    uint64_t per_table = cs / 8;
    uint64_t per_block = cs * 8 >> refcount_order;
    uint64_t table = 0, blocks = 0, n = 0, last;

    do {
        last = n;
        blocks = (clusters + table + blocks + per_block - 1) / per_block;
        table = (blocks + per_table - 1) / per_table;
        n = clusters + blocks + table;
    } while (n != last);
    return (blocks + table) * cs;
}

/* Everything a fully preallocated image of `size` bytes holds; l2e_size
 * is 16 with extended L2 entries, whose tables map half as much. */
static uint64_t qcow2_prealloc_size(uint64_t size, uint64_t cs,
                                    int refcount_order, uint64_t l2e_size)
{
    uint64_t aligned = (size + cs - 1) / cs * cs;
    uint64_t meta = cs;                       /* header */
    uint64_t per_l2 = cs / l2e_size, per_l1 = cs / 8, nl2e, nl1e;

    nl2e = (aligned / cs + per_l2 - 1) / per_l2 * per_l2;
    meta += nl2e * l2e_size;
    nl1e = nl2e * l2e_size / cs;
    nl1e = (nl1e + per_l1 - 1) / per_l1 * per_l1;
    meta += nl1e * 8;
    meta += refcount_metadata_size((meta + aligned) / cs, cs, refcount_order);
    return meta + aligned;
}

/*
 * Whether data at host offset map of file reads zeroes (a hole of a
 * sparse file under preallocated clusters): QEMU asks the file too.
 */
static bool file_reads_zero(BlockDriverState *file, int64_t map,
                            int64_t *pnum)
{
    int64_t flen = file ? bdrv_getlength(file) : -1, fpnum = 0;
    int ret;

    if (flen < 0) {
        return false;
    }
    if (map >= flen) {
        return true;
    }
    ret = bdrv_block_status(file, map, MIN(*pnum, flen - map), &fpnum,
                            NULL, NULL);
    if (ret < 0 || fpnum <= 0) {
        return false;
    }
    /* The file's run decides how far this answer goes. */
    if (map + fpnum < flen) {
        *pnum = MIN(*pnum, fpnum);
    }
    return ret & BDRV_BLOCK_ZERO;
}

/* Bytes of the source's allocated data clusters (zero areas skipped). */
static bool allocated_bytes(BlockDriverState *in, uint64_t cs, int64_t len,
                            uint64_t *out)
{
    int64_t pnum, map;
    BlockDriverState *file;

    *out = 0;
    for (int64_t off = 0; off < len; off += pnum) {
        int ret;

        file = NULL;
        ret = bdrv_block_status_above(in, off, len - off, &pnum, &map,
                                      &file, NULL);
        if (ret < 0) {
            img_error("Unable to get block status: %s", g_strerror(-ret));
            return false;
        }
        if ((ret & BDRV_BLOCK_ZERO) ||
            ((ret & BDRV_BLOCK_DATA) && (ret & BDRV_BLOCK_OFFSET_VALID) &&
             file != in && file_reads_zero(file, map, &pnum))) {
            continue;
        }
        if ((ret & (BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED)) ==
            (BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED)) {
            pnum = (int64_t)(((uint64_t)(off + pnum) + cs - 1) / cs * cs) - off;
            *out += off % cs + pnum;
        }
    }
    return true;
}

/* Could the source hold persistent bitmaps (a version 3 qcow2)?  QEMU
 * then prints their size, 0 when it has none. */
static bool source_has_bitmap_room(BlockDriverState *in)
{
    BlockSpecificInfo si = { 0 };

    if (strcmp(bdrv_get_format_name(in), "qcow2")) {
        return false;
    }
    bdrv_get_specific_info(in, &si);
    return si.compat && !strcmp(si.compat, "1.1");
}

static bool opt_is_true(const char *v)
{
    return v && (!strcmp(v, "on") || !strcmp(v, "yes") || !strcmp(v, "true"));
}

/* The qcow2 creation options measure reads, with QEMU's checks in its
 * order (extended_l2 is known before the cluster size is judged; unlike
 * create, measure does not ask for compat=1.1 with it). */
static bool qcow2_measure_opts(ImgCreateOpts *co, uint64_t *cs,
                               int *version, int *refcount_order,
                               uint64_t *l2e_size)
{
    const char *v;
    uint64_t bits = 16;
    bool extl2 = opt_is_true(img_create_opts_get(co, "extended_l2"));

    *cs = 65536;
    *version = 3;
    *l2e_size = extl2 ? 16 : 8;
    if ((v = img_create_opts_get(co, "cluster_size"))) {
        *cs = g_ascii_strtoull(v, NULL, 10);
        if (*cs < 512 || *cs > 2 * 1024 * 1024 || (*cs & (*cs - 1))) {
            img_error("Cluster size must be a power of two between 512 and "
                      "2048k");
            return false;
        }
    }
    /* 32 subclusters of at least 512 bytes each */
    if (extl2 && *cs < 16384) {
        img_error("Extended L2 entries are only supported with cluster "
                  "sizes of at least 16384 bytes");
        return false;
    }
    if ((v = img_create_opts_get(co, "compat"))) {
        if (!strcmp(v, "0.10") || !strcmp(v, "v2")) {
            *version = 2;
        } else if (strcmp(v, "1.1") && strcmp(v, "v3")) {
            img_error("Invalid compatibility level: '%s'", v);
            return false;
        }
    }
    if ((v = img_create_opts_get(co, "refcount_bits"))) {
        bits = g_ascii_strtoull(v, NULL, 10);
        if (bits == 0 || bits > 64 || (bits & (bits - 1))) {
            img_error("Refcount width must be a power of two and may not "
                      "exceed 64 bits");
            return false;
        }
        if (*version < 3 && bits != 16) {
            img_error("Different refcount widths than 16 bits require "
                      "compatibility level 1.1 or above (use compat=1.1 or "
                      "greater)");
            return false;
        }
    }
    *refcount_order = __builtin_ctzll(bits);
    if ((v = img_create_opts_get(co, "preallocation")) &&
        bdrv_prealloc_parse(v) < 0) {
        img_error("Invalid parameter '%s'", v);
        return false;
    }
    return true;
}

/* encrypt.format=luks: the LUKS header's clusters (AES needs none). */
static bool luks_header_bytes(ImgCreateOpts *co, uint64_t cs,
                              uint64_t *bytes)
{
    const char *fmt = img_create_opts_get(co, "encrypt.format");
    LuksCreateOptions lo = {
        .cipher_alg = img_create_opts_get(co, "encrypt.cipher-alg"),
        .cipher_mode = img_create_opts_get(co, "encrypt.cipher-mode"),
        .ivgen_alg = img_create_opts_get(co, "encrypt.ivgen-alg"),
        .ivgen_hash_alg = img_create_opts_get(co, "encrypt.ivgen-hash-alg"),
        .hash_alg = img_create_opts_get(co, "encrypt.hash-alg"),
    };
    g_autoptr(GError) err = NULL;
    uint64_t len;

    *bytes = 0;
    if (!fmt || strcmp(fmt, "luks")) {
        return true;
    }
    if (!luks_header_size(&lo, &len, &err)) {
        img_error("%s", err->message);
        return false;
    }
    *bytes = (len + cs - 1) / cs * cs;
    return true;
}

static bool measure_qcow2(ImgCreateOpts *co, BlockDriverState *in,
                          uint64_t size, MeasureInfo *info)
{
    uint64_t cs, vsize, required = 0, luks = 0, l2e_size;
    int version, order;
    const char *prealloc = img_create_opts_get(co, "preallocation");

    if (!qcow2_measure_opts(co, &cs, &version, &order, &l2e_size) ||
        !luks_header_bytes(co, cs, &luks)) {
        return false;
    }
    vsize = (size + cs - 1) / cs * cs;
    if ((vsize / cs + cs / l2e_size - 1) / (cs / l2e_size) * 8 >
        32 * 1024 * 1024) {
        img_error("The image size is too large (try using a larger cluster "
                  "size)");
        return false;
    }
    if (in) {
        int64_t len = bdrv_getlength(in);
        if (len < 0) {
            img_error("Unable to get image virtual_size: %s",
                      g_strerror((int)-len));
            return false;
        }
        vsize = ((uint64_t)len + cs - 1) / cs * cs;
        if (img_create_opts_get(co, "backing_file")) {
            required = vsize;      /* nothing may be shared: all counted */
        } else if (!allocated_bytes(in, cs, len, &required)) {
            return false;
        }
    }
    if (prealloc && (!strcmp(prealloc, "full") || !strcmp(prealloc, "falloc"))) {
        required = vsize;
    }
    info->fully_allocated = qcow2_prealloc_size(vsize, cs, order,
                                                l2e_size) + luks;
    info->required = info->fully_allocated - vsize + required;
    info->has_bitmaps = version >= 3 && in && source_has_bitmap_room(in);
    if (info->has_bitmaps) {
        int64_t n = bdrv_bitmaps_size(in, cs);
        info->bitmaps = n > 0 ? (uint64_t)n : 0;
    }
    return true;
}

static bool measure_raw(BlockDriverState *in, uint64_t size,
                        MeasureInfo *info)
{
    if (in) {
        int64_t len = bdrv_getlength(in);
        if (len < 0) {
            img_error("Unable to get image size: %s", g_strerror((int)-len));
            return false;
        }
        info->required = len;
    } else {
        info->required = (size + 511) / 512 * 512;
    }
    info->fully_allocated = info->required;
    return true;
}

static void print_info(const MeasureInfo *info, ImgOutputFormat of)
{
    if (of == OFORMAT_HUMAN) {
        printf("required size: %" G_GUINT64_FORMAT "\n", info->required);
        printf("fully allocated size: %" G_GUINT64_FORMAT "\n",
               info->fully_allocated);
        if (info->has_bitmaps) {
            printf("bitmaps size: %" G_GUINT64_FORMAT "\n", info->bitmaps);
        }
    } else {
        g_autoptr(JsonBuilder) b = json_builder_new();
        g_autoptr(JsonNode) root = NULL;

        json_builder_begin_object(b);
        if (info->has_bitmaps) {
            json_builder_set_member_name(b, "bitmaps");
            json_builder_add_int_value(b, (gint64)info->bitmaps);
        }
        json_builder_set_member_name(b, "required");
        json_builder_add_int_value(b, (gint64)info->required);
        json_builder_set_member_name(b, "fully-allocated");
        json_builder_add_int_value(b, (gint64)info->fully_allocated);
        json_builder_end_object(b);
        root = json_builder_get_root(b);
        img_json_print(root);
    }
}

bool img_check_snapshot_param(const char *param)
{
    g_autoptr(GHashTable) o = bdrv_opts_new();
    g_autoptr(GError) err = NULL;
    GHashTableIter it;
    gpointer k;

    if (!g_str_has_prefix(param, "snapshot.")) {
        return true;
    }
    if (!bdrv_opts_parse(o, param, NULL, &err)) {
        img_error("Failed in parsing snapshot param '%s'", param);
        return false;
    }
    g_hash_table_iter_init(&it, o);
    while (g_hash_table_iter_next(&it, &k, NULL)) {
        if (strcmp(k, "snapshot.id") && strcmp(k, "snapshot.name")) {
            img_error("Invalid parameter '%s'", (const char *)k);
            img_error("Failed in parsing snapshot param '%s'", param);
            return false;
        }
    }
    return true;
}

/* -l of measure and convert: "snapshot.id=..,snapshot.name=.." or an ID
 * or name, loaded read-only in place of the active image. */
bool img_load_snapshot(BlockDriverState *bs, const char *sn)
{
    g_autoptr(GError) err = NULL;
    int ret;

    if (g_str_has_prefix(sn, "snapshot.")) {
        g_autoptr(GHashTable) o = bdrv_opts_new();
        if (!bdrv_opts_parse(o, sn, NULL, &err)) {
            img_error("Failed in parsing snapshot param '%s'", sn);
            return false;
        }
        ret = bdrv_snapshot_load_tmp(bs, bdrv_opts_get(o, "snapshot.id"),
                                     bdrv_opts_get(o, "snapshot.name"), &err);
    } else {
        ret = bdrv_snapshot_load_tmp_by_id_or_name(bs, sn, &err);
    }
    if (ret < 0) {
        img_error("Failed to load snapshot: %s", err->message);
        return false;
    }
    return true;
}

static int measure(ImgCommonOpts *o, const char *filename, const char *sn,
                   const char *out_fmt, const char *options, uint64_t size)
{
    g_autoptr(BlockDriverState) in = NULL;
    g_autoptr(ImgCreateOpts) co = NULL;
    g_autoptr(GError) err = NULL;
    ImgOutputFormat of;
    MeasureInfo info = { 0 };

    if (!img_parse_output_format(o->output, &of)) {
        return 1;
    }
    if (filename) {
        in = img_open_common(o, filename, 0);
        if (!in || (sn && !img_load_snapshot(in, sn))) {
            return 1;
        }
    }
    co = img_create_opts_new(out_fmt, &err);
    if (!co) {
        img_error("%s", err->message);
        return 1;
    }
    if (options && !img_create_opts_parse(co, options, &err)) {
        img_error("%s", err->message);
        img_error("Invalid options for file format '%s'", out_fmt);
        return 1;
    }
    if (size == UINT64_MAX) {
        const char *v = img_create_opts_get(co, "size");
        size = v ? g_ascii_strtoull(v, NULL, 10) : 0;
    }
    if (!strcmp(out_fmt, "qcow2") ? !measure_qcow2(co, in, size, &info)
                                  : !measure_raw(in, size, &info)) {
        return 1;
    }
    print_info(&info, of);
    return 0;
}

int img_measure(int argc, char **argv)
{
    static const struct option long_options[] = {
        { "help", no_argument, NULL, 'h' },
        { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
        { "object", required_argument, NULL, OPT_OBJECT },
        { "output", required_argument, NULL, OPT_OUTPUT },
        { "size", required_argument, NULL, OPT_SIZE },
        { "force-share", no_argument, NULL, 'U' },
        { NULL, 0, NULL, 0 },
    };
    ImgCommonOpts o = IMG_COMMON_OPTS_INIT(0);
    g_autofree char *options = NULL;
    const char *out_fmt = "raw", *sn = NULL, *filename = NULL;
    uint64_t size = UINT64_MAX;
    int64_t sval;
    int c;

    while ((c = getopt_long(argc, argv, "hf:O:o:l:U", long_options,
                            NULL)) != -1) {
        switch (c) {
        case '?':
            img_help();
        case 'O':
            out_fmt = optarg;
            break;
        case 'o':
            if (!img_add_option_list(&options, optarg)) {
                return 1;
            }
            break;
        case 'l':
            if (!img_check_snapshot_param(optarg)) {
                return 1;
            }
            sn = optarg;
            break;
        case OPT_OUTPUT:
            if (strcmp(optarg, "json") && strcmp(optarg, "human")) {
                img_error("--output must be used with human or json as "
                          "argument.");
                return 1;
            }
            o.output = optarg;
            break;
        case OPT_OBJECT: {
            g_autoptr(GError) err = NULL;
            if (!bdrv_object_add(optarg, &err)) {
                img_error("%s", err->message);
                return 1;
            }
            break;
        }
        case OPT_SIZE:
            if (!img_cvtnum("image size", optarg, &sval)) {
                return 1;
            }
            size = (uint64_t)sval;
            break;
        default:
            img_common_opt(c, argv, &o);
            break;
        }
    }
    if (argc - optind > 1) {
        img_error("At most one filename argument is allowed.");
        return 1;
    }
    filename = argc - optind == 1 ? argv[optind] : NULL;
    if (!filename && (o.image_opts || o.fmt || sn)) {
        img_error("--image-opts, -f, and -l require a filename argument.");
        return 1;
    }
    if (filename && size != UINT64_MAX) {
        img_error("--size N cannot be used together with a filename.");
        return 1;
    }
    if (!filename && size == UINT64_MAX) {
        img_error("Either --size N or one filename must be specified.");
        return 1;
    }
    return measure(&o, filename, sn, out_fmt, options, size);
}
