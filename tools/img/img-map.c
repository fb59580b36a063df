/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * strata-img map: where each range of the guest disk comes from -- which
 * layer of the chain (depth), whether it is allocated there (present),
 * reads as zeroes, holds data, and at which host offset -- merged into
 * runs and printed like qemu-img map (JSON with qemu's keys, or human).
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "img-common.h"

typedef struct MapEntry {
    int64_t start;
    int64_t length;
    int64_t depth;
    bool present;
    bool zero;
    bool data;
    bool has_offset;
    int64_t offset;
    const char *filename;        /* of the layer's file, with an offset */
} MapEntry;

/* Probe at most this much at a time, as qemu-img does. */
#define MAP_PROBE_MAX (1LL << 30)

/* Per layer, asked once: may its data clusters be holes in its file? */
static GHashTable *sparse_layers;

static bool data_may_be_sparse(BlockDriverState *bs)
{
    gpointer v;

    if (!sparse_layers) {
        sparse_layers = g_hash_table_new(NULL, NULL);
    }
    if (!g_hash_table_lookup_extended(sparse_layers, bs, NULL, &v)) {
        BlockDriverInfo bdi;
        bool sparse = bdrv_get_info(bs, &bdi) == 0 && bdi.data_may_be_sparse;
        v = GINT_TO_POINTER(sparse);
        g_hash_table_insert(sparse_layers, bs, v);
    }
    return GPOINTER_TO_INT(v);
}

/*
 * The status of [offset, offset+bytes) as qemu-img computes it: descend
 * while a layer neither holds data nor reads zeroes; a layer without a
 * backing file, or a range past its backing file's end, reads zeroes.
 */
static int get_block_status(BlockDriverState *bs, int64_t offset,
                            int64_t bytes, MapEntry *e)
{
    BlockDriverState *file = NULL;
    int64_t map = 0;
    int depth = 0;
    int ret;

    for (;;) {
        BlockDriverState *backing = bdrv_backing_below(bs);
        ret = bdrv_block_status(bs, offset, bytes, &bytes, &map, &file);
        if (ret < 0) {
            return ret;
        }
        if (bytes <= 0) {
            return -EIO;
        }
        if (ret & (BDRV_BLOCK_ZERO | BDRV_BLOCK_DATA)) {
            break;
        }
        if (!backing) {
            ret |= BDRV_BLOCK_ZERO;
            break;
        }
        int64_t blen = bdrv_getlength(backing);
        if (blen >= 0 && offset >= blen) {
            ret |= BDRV_BLOCK_ZERO;
            break;
        }
        bs = backing;
        depth++;
    }
    /* Like qemu-img: data mapped to a hole in the host file, or past its
     * end, reads as zeroes. */
    if ((ret & BDRV_BLOCK_DATA) && !(ret & BDRV_BLOCK_ZERO) &&
        (ret & BDRV_BLOCK_OFFSET_VALID) && file && file != bs &&
        data_may_be_sparse(bs)) {
        int64_t flen = bdrv_getlength(file), fpnum = 0;
        if (flen >= 0 && map >= flen) {
            ret |= BDRV_BLOCK_ZERO;
        } else if (flen >= 0) {
            int ret2 = bdrv_block_status(file, map, MIN(bytes, flen - map),
                                         &fpnum, NULL, NULL);
            if (ret2 >= 0 && fpnum > 0) {
                if ((ret2 & BDRV_BLOCK_ZERO) && map + fpnum >= flen) {
                    ret |= BDRV_BLOCK_ZERO;
                } else {
                    bytes = fpnum;
                    ret |= ret2 & BDRV_BLOCK_ZERO;
                }
            }
        }
    }
    *e = (MapEntry) {
        .start = offset,
        .length = bytes,
        .depth = depth,
        .present = !!(ret & BDRV_BLOCK_ALLOCATED),
        .zero = !!(ret & BDRV_BLOCK_ZERO),
        .data = !!(ret & BDRV_BLOCK_DATA),
        .has_offset = !!(ret & BDRV_BLOCK_OFFSET_VALID),
        .offset = map,
    };
    if (e->has_offset && file) {
        e->filename = bdrv_get_filename(file);
    }
    return 0;
}

static bool entry_mergeable(const MapEntry *curr, const MapEntry *next)
{
    if (curr->length == 0) {
        return false;
    }
    if (curr->zero != next->zero || curr->data != next->data ||
        curr->depth != next->depth || curr->present != next->present ||
        curr->has_offset != next->has_offset) {
        return false;
    }
    if (curr->has_offset && curr->offset + curr->length != next->offset) {
        return false;
    }
    if ((curr->filename == NULL) != (next->filename == NULL) ||
        (curr->filename && strcmp(curr->filename, next->filename))) {
        return false;
    }
    return true;
}

static bool dump_map_entry(ImgOutputFormat fmt, const MapEntry *e,
                           const MapEntry *next)
{
    if (fmt == OFORMAT_HUMAN) {
        if (e->data && !e->has_offset) {
            img_error("File contains external, encrypted or compressed "
                      "clusters.");
            return false;
        }
        if (e->data && !e->zero) {
            printf("%#-16" G_GINT64_MODIFIER "x%#-16" G_GINT64_MODIFIER
                   "x%#-16" G_GINT64_MODIFIER "x%s\n",
                   (uint64_t)e->start, (uint64_t)e->length,
                   (uint64_t)(e->has_offset ? e->offset : 0),
                   e->filename ? e->filename : "");
        }
        return true;
    }
    printf("{ \"start\": %" G_GINT64_FORMAT ", \"length\": %" G_GINT64_FORMAT
           ", \"depth\": %" G_GINT64_FORMAT ", \"present\": %s, "
           "\"zero\": %s, \"data\": %s", e->start, e->length, e->depth,
           e->present ? "true" : "false", e->zero ? "true" : "false",
           e->data ? "true" : "false");
    if (e->has_offset) {
        printf(", \"offset\": %" G_GINT64_FORMAT, e->offset);
    }
    putchar('}');
    if (next) {
        puts(",");
    }
    return true;
}

int img_map(int argc, char **argv)
{
    static const struct option long_options[] = {
        { "help", no_argument, NULL, 'h' },
        { "format", required_argument, NULL, 'f' },
        { "output", required_argument, NULL, OPT_OUTPUT },
        { "object", required_argument, NULL, OPT_OBJECT },
        { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
        { "force-share", no_argument, NULL, 'U' },
        { "start-offset", required_argument, NULL, 's' },
        { "max-length", required_argument, NULL, 'l' },
        { NULL, 0, NULL, 0 },
    };
    ImgCommonOpts o = IMG_COMMON_OPTS_INIT(0);
    ImgOutputFormat output_format;
    const char *filename;
    g_autoptr(BlockDriverState) bs = NULL;
    int64_t start_offset = 0, max_length = -1, length;
    MapEntry curr = { 0 }, next;
    bool ok = true;
    int c, ret;

    while ((c = getopt_long(argc, argv, ":f:s:l:hU", long_options,
                            NULL)) != -1) {
        switch (c) {
        case 's':
            if (!img_cvtnum("start offset", optarg, &start_offset)) {
                return 1;
            }
            break;
        case 'l':
            if (!img_cvtnum("max length", optarg, &max_length)) {
                return 1;
            }
            break;
        default:
            img_common_opt(c, argv, &o);
            break;
        }
    }
    filename = img_one_filename(argc, argv);
    if (!img_parse_output_format(o.output, &output_format) ||
        !img_common_check_format(&o)) {
        return 1;
    }

    bs = img_open_common(&o, filename, 0);
    if (!bs) {
        return 1;
    }
    if (output_format == OFORMAT_HUMAN) {
        printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
    } else {
        putchar('[');
    }
    length = bdrv_getlength(bs);
    if (length < 0) {
        img_error("Failed to get size for '%s'", filename);
        return 1;
    }
    if (max_length != -1) {
        length = MIN(start_offset + max_length, length);
    }

    curr.start = start_offset;
    while (curr.start + curr.length < length) {
        int64_t offset = curr.start + curr.length;
        int64_t n = MIN(MAP_PROBE_MAX, length - offset);

        ret = get_block_status(bs, offset, n, &next);
        if (ret < 0) {
            img_error("Could not read file metadata: %s", g_strerror(-ret));
            ok = false;
            break;
        }
        if (entry_mergeable(&curr, &next)) {
            curr.length += next.length;
            continue;
        }
        if (curr.length > 0 && !dump_map_entry(output_format, &curr, &next)) {
            ok = false;
            break;
        }
        curr = next;
    }
    if (ok) {
        ok = dump_map_entry(output_format, &curr, NULL);
    }
    if (output_format == OFORMAT_JSON) {
        puts("]");
    }
    g_clear_pointer(&sparse_layers, g_hash_table_unref);
    return ok ? 0 : 1;
}
