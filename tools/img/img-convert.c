/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * strata-img convert: copies the guest content of one or more images
 * (concatenated) into a new or existing target image.
 *
 * The source is walked in extents of one allocation status (data, zero,
 * or "leave to the target's backing file").  Worker threads take extents
 * in order, read data extents in parallel and write them in source order
 * (unless -W), so a new qcow2 target gets its clusters in guest order.
 * Zero extents and runs of at least -S bytes of zeroes inside data are not
 * written to a target that already reads as zeroes, which keeps the target
 * sparse.
 *
 * With -c every target cluster is written compressed: extents are whole
 * target clusters (a partly allocated one is copied whole), and clusters
 * that read as zeroes are left out, as qemu-img does.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "img-common.h"
#include "block/dirty-bitmap.h"
#include "img-create-opts.h"

#define BUF_SIZE (2 * 1024 * 1024)
#define MAX_BUF_SIZE (16 * 1024 * 1024)   /* largest -S qemu-img accepts */
#define DEFAULT_SPARSE (4 * 1024)
#define MAX_COROUTINES 16                 /* qemu-img's -m limit */
#define MAX_WORKERS 4

typedef enum {
    EXTENT_DATA,
    EXTENT_ZERO,
    EXTENT_BACKING,    /* unallocated above the target's backing file */
} ExtentStatus;

typedef struct {
    BlockDriverState *bs;
    const char *filename;
    int64_t len;        /* bytes */
    int64_t padded;     /* len rounded up to a sector, as qemu-img */
    int64_t start;      /* offset of this source in the target */
    int64_t alignment;  /* cluster size (or sector): status runs end there */
} ConvertSource;

typedef struct {
    ConvertSource *src;
    int src_num;
    int64_t total_size;
    BlockDriverState *target;

    int64_t min_sparse;         /* 0: write everything */
    int64_t alignment;          /* granularity of zero detection */
    bool has_zero_init;         /* unwritten target areas read as zeroes */
    bool target_has_backing;
    bool wr_in_order;
    bool writethrough;
    bool compressed;            /* -c */
    int64_t cluster_size;       /* of the target, with -c */
    int num_workers;
    bool salvage;               /* --salvage (resize branch) */
    bool salvage_quiet;         /* -q: no salvage warnings */

    GMutex lock;
    GCond cond;
    /* planner state, under lock */
    int64_t next_offset;        /* next target offset to hand out */
    int64_t status_end;         /* the cached status holds up to here */
    ExtentStatus status;
    uint64_t next_seq;
    uint64_t write_seq;         /* extent allowed to write next */
    int ret;                    /* first error, 0 if none */
    /* progress, under lock */
    int64_t allocated_total;
    int64_t allocated_done;
} ConvertState;

typedef struct {
    int64_t offset;             /* in the target */
    int64_t bytes;
    ExtentStatus status;
    int src_index;
    uint64_t seq;
} Extent;

static int source_index(ConvertState *s, int64_t offset)
{
    for (int i = 0; i < s->src_num; i++) {
        if (offset < s->src[i].start + s->src[i].padded) {
            return i;
        }
    }
    return s->src_num - 1;
}

/* ---- convert --salvage (resize branch) ---- */

static void salvage_warn(ConvertState *s, const char *what, int64_t offset,
                         int err)
{
    if (!s->salvage_quiet) {
        fprintf(stderr, "%s: warning: error while reading %s%" G_GINT64_FORMAT
                ": %s\n", img_progname, what, offset, g_strerror(err));
    }
}

static int salvage_status_call(ConvertState *s, ConvertSource *src,
                               int64_t soff, int64_t n, int64_t *count)
{
    if (s->target_has_backing) {
        return bdrv_block_status(src->bs, soff, n, count, NULL, NULL);
    }
    return bdrv_block_status_above(src->bs, soff, n, count, NULL, NULL, NULL);
}

/*
 * A block status that failed: asked again over a quarter of the range
 * until one sector is left, which is then taken for data (its read may
 * still succeed), as qemu-img --salvage does.
 */
static int salvage_status(ConvertState *s, ConvertSource *src, int64_t soff,
                          int64_t n, int err, int64_t *count)
{
    int64_t sectors = (n + BDRV_SECTOR_SIZE - 1) / BDRV_SECTOR_SIZE;
    int ret;

    while (sectors > 1) {
        sectors = (sectors + 3) / 4;
        ret = salvage_status_call(s, src, soff,
                                  MIN(sectors * BDRV_SECTOR_SIZE, n), count);
        if (ret >= 0 && *count > 0) {
            return ret;
        }
        err = ret < 0 ? -ret : EIO;
    }
    salvage_warn(s, "block status at offset ", soff, err);
    *count = MIN(n, BDRV_SECTOR_SIZE);
    return BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED;
}

/* A read that failed: sector by sector, the unreadable ones zeroed. */
static int salvage_read(ConvertState *s, ConvertSource *src, int64_t soff,
                        int64_t n, uint8_t *buf)
{
    for (int64_t i = 0; i < n; i += BDRV_SECTOR_SIZE) {
        int64_t len = MIN(BDRV_SECTOR_SIZE, n - i);
        int ret = bdrv_pread(src->bs, soff + i, len, buf + i);
        if (ret < 0) {
            salvage_warn(s, "offset ", soff + i, -ret);
            memset(buf + i, 0, len);
        }
    }
    return 0;
}

/*
 * The status of the source at target offset `offset` and how far it
 * holds (at most `max` bytes).  Prints qemu-img's message on error.
 */
static int query_status(ConvertState *s, int64_t offset, int64_t max,
                        ExtentStatus *status, int64_t *pnum)
{
    int i = source_index(s, offset);
    ConvertSource *src = &s->src[i];
    int64_t soff = offset - src->start;
    int64_t n = MIN(max, src->padded - soff);
    int64_t count;
    int ret;

    if (soff >= src->len) {
        /* the padding up to a whole sector */
        *status = EXTENT_ZERO;
        *pnum = n;
        return 0;
    }
    if (s->target_has_backing) {
        /* Only this layer: what lies below stays with the backing file. */
        ret = bdrv_block_status(src->bs, soff, MIN(n, src->len - soff),
                                &count, NULL, NULL);
    } else {
        ret = bdrv_block_status_above(src->bs, soff, MIN(n, src->len - soff),
                                      &count, NULL, NULL, NULL);
    }
    if (ret >= 0 && count <= 0) {
        ret = -EIO;
    }
    if (ret < 0 && s->salvage) {
        ret = salvage_status(s, src, soff, MIN(n, src->len - soff), -ret,
                             &count);
    }
    if (ret < 0) {
        img_error("error while reading block status at offset %"
                  G_GINT64_FORMAT ": %s", soff, g_strerror(-ret));
        return ret;
    }
    if (s->target_has_backing && !(ret & BDRV_BLOCK_ALLOCATED)) {
        *status = EXTENT_BACKING;
    } else if (ret & BDRV_BLOCK_ZERO) {
        *status = EXTENT_ZERO;
    } else {
        *status = EXTENT_DATA;
    }
    /* A status reaching the end of the data covers the padding too. */
    *pnum = soff + count >= src->len ? n : count;
    return 0;
}

/* The run of one status starting at target offset `offset`, ending on a
 * source cluster boundary where possible so that no cluster is read in
 * two pieces (as qemu-img does). */
static int status_run(ConvertState *s, int64_t offset, ExtentStatus *status,
                      int64_t *pnum)
{
    ConvertSource *src = &s->src[source_index(s, offset)];
    int64_t tail;
    int ret = query_status(s, offset, INT64_MAX, status, pnum);

    if (ret < 0) {
        return ret;
    }
    tail = (offset - src->start + *pnum) % src->alignment;
    if (*pnum > tail) {
        *pnum -= tail;
    }
    return 0;
}

/* -c writes whole clusters: a run shorter than one is copied as data
 * for the whole cluster (and the rest of the run with it, as qemu-img);
 * a longer one stops at a cluster boundary. */
static int64_t compressed_extent(ConvertState *s, int64_t n)
{
    if (n < s->cluster_size) {
        s->status = EXTENT_DATA;
        return MIN(s->cluster_size, s->total_size - s->next_offset);
    }
    return n / s->cluster_size * s->cluster_size;
}

/* Under s->lock: the next extent to copy; false when done or failed. */
static bool plan_extent(ConvertState *s, Extent *e)
{
    int64_t n;
    int i;

    if (s->ret || s->next_offset >= s->total_size) {
        return false;
    }
    i = source_index(s, s->next_offset);
    if (s->next_offset >= s->status_end) {
        int64_t pnum;
        ExtentStatus st;
        int ret = status_run(s, s->next_offset, &st, &pnum);
        if (ret < 0) {
            s->ret = ret;
            g_cond_broadcast(&s->cond);
            return false;
        }
        s->status = st;
        s->status_end = s->next_offset + pnum;
    }
    n = s->status_end - s->next_offset;
    if (s->status == EXTENT_DATA || !s->min_sparse) {
        /* goes through a buffer */
        n = MIN(n, BUF_SIZE);
    }
    if (s->compressed) {
        n = compressed_extent(s, n);
    }
    e->offset = s->next_offset;
    e->bytes = n;
    e->status = s->status;
    e->src_index = i;
    e->seq = s->next_seq++;
    s->next_offset += n;
    return true;
}

static void set_error(ConvertState *s, int ret)
{
    g_mutex_lock(&s->lock);
    if (!s->ret) {
        s->ret = ret;
    }
    g_cond_broadcast(&s->cond);
    g_mutex_unlock(&s->lock);
}

static int write_data(ConvertState *s, int64_t offset, int64_t bytes,
                      const uint8_t *buf)
{
    int ret = s->compressed ?
              bdrv_pwrite_compressed(s->target, offset, bytes, buf) :
              bdrv_pwrite(s->target, offset, bytes, buf);

    if (ret == 0 && s->writethrough) {
        ret = bdrv_flush(s->target);
    }
    return ret;
}

static int write_zeroes(ConvertState *s, int64_t offset, int64_t bytes)
{
    int ret;

    if (s->has_zero_init) {
        return 0;
    }
    ret = bdrv_pwrite_zeroes(s->target, offset, bytes, BDRV_REQ_MAY_UNMAP);
    if (ret == 0 && s->writethrough) {
        ret = bdrv_flush(s->target);
    }
    return ret;
}

/*
 * Writes a data extent, leaving out zero runs: leading and trailing ones
 * always, inner ones when at least min_sparse long (shorter ones are not
 * worth splitting a write for).  Runs are cut at `alignment` boundaries of
 * the target so requests stay aligned.
 */
static int write_sparse(ConvertState *s, int64_t offset, int64_t bytes,
                        const uint8_t *buf)
{
    int64_t al = s->alignment;
    int64_t pos = 0;
    int64_t data_start = -1;   /* start of the pending data run */
    int64_t zero_start = -1;   /* start of the pending zero run */
    int ret;

    while (pos < bytes) {
        int64_t piece = MIN(bytes - pos, al - (offset + pos) % al);
        bool zero = img_buffer_is_zero(buf + pos, piece);

        if (zero) {
            if (zero_start < 0) {
                zero_start = pos;
            }
        } else {
            if (zero_start >= 0) {
                int64_t zlen = pos - zero_start;
                if (data_start < 0 || zlen >= s->min_sparse) {
                    if (data_start >= 0) {
                        ret = write_data(s, offset + data_start,
                                         zero_start - data_start,
                                         buf + data_start);
                        if (ret < 0) {
                            return ret;
                        }
                    }
                    ret = write_zeroes(s, offset + zero_start, zlen);
                    if (ret < 0) {
                        return ret;
                    }
                    data_start = pos;
                }
                zero_start = -1;
            }
            if (data_start < 0) {
                data_start = pos;
            }
        }
        pos += piece;
    }
    if (data_start >= 0) {
        int64_t end = zero_start >= 0 ? zero_start : bytes;
        ret = write_data(s, offset + data_start, end - data_start,
                         buf + data_start);
        if (ret < 0) {
            return ret;
        }
    }
    if (zero_start >= 0) {
        ret = write_zeroes(s, offset + zero_start, bytes - zero_start);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

/* -c: runs of clusters with data go compressed in one request (so they
 * are compressed in parallel); clusters of zeroes are left out. */
static int write_compressed(ConvertState *s, int64_t offset, int64_t bytes,
                            const uint8_t *buf)
{
    int64_t pos = 0, run = 0;   /* data run: [run, pos) */
    int ret;

    while (pos < bytes) {
        int64_t n = MIN(bytes - pos, s->cluster_size);
        if (img_buffer_is_zero(buf + pos, n)) {
            if (pos > run) {
                ret = write_data(s, offset + run, pos - run, buf + run);
                if (ret < 0) {
                    return ret;
                }
            }
            ret = write_zeroes(s, offset + pos, n);
            if (ret < 0) {
                return ret;
            }
            run = pos + n;
        }
        pos += n;
    }
    return pos > run ? write_data(s, offset + run, pos - run, buf + run) : 0;
}

/* The extent's bytes; with -c a target cluster may span the end of one
 * source and the start of the next, so the read goes on across sources
 * (each read as whole sectors, its padding as zeroes). */
static int read_extent(ConvertState *s, const Extent *e, uint8_t *buf)
{
    int64_t done = 0;

    if (e->status != EXTENT_DATA) {
        memset(buf, 0, e->bytes);
        return 0;
    }
    while (done < e->bytes) {
        int i = source_index(s, e->offset + done);
        ConvertSource *src = &s->src[i];
        int64_t soff = e->offset + done - src->start;
        int64_t piece = MIN(e->bytes - done, src->padded - soff);
        int64_t n = MIN(piece, MAX(src->len - soff, 0));
        int ret = 0;

        if (piece <= 0) {
            piece = e->bytes - done;   /* past the last source */
            n = 0;
        }
        if (n > 0) {
            ret = bdrv_pread(src->bs, soff, n, buf + done);
            if (ret < 0 && s->salvage) {
                ret = salvage_read(s, src, soff, n, buf + done);
            }
            if (ret < 0) {
                return ret;
            }
        }
        memset(buf + done + n, 0, piece - n);
        done += piece;
    }
    return 0;
}

static int write_extent(ConvertState *s, const Extent *e, const uint8_t *buf)
{
    switch (e->status) {
    case EXTENT_BACKING:
        return 0;
    case EXTENT_ZERO:
        if (s->min_sparse) {
            return write_zeroes(s, e->offset, e->bytes);
        }
        /* -S 0: zeroes are written as data (buf is zeroed) */
        return write_data(s, e->offset, e->bytes, buf);
    case EXTENT_DATA:
    default:
        if (!s->min_sparse) {
            return write_data(s, e->offset, e->bytes, buf);
        }
        if (s->compressed) {
            return write_compressed(s, e->offset, e->bytes, buf);
        }
        return write_sparse(s, e->offset, e->bytes, buf);
    }
}

static gpointer convert_worker(gpointer opaque)
{
    ConvertState *s = opaque;
    uint8_t *buf = NULL;
    Extent e;
    int ret;

    if (posix_memalign((void **)&buf, 4096, BUF_SIZE)) {
        set_error(s, -ENOMEM);
        return NULL;
    }
    for (;;) {
        g_mutex_lock(&s->lock);
        if (!plan_extent(s, &e)) {
            g_mutex_unlock(&s->lock);
            break;
        }
        g_mutex_unlock(&s->lock);

        if (e.status == EXTENT_DATA || !s->min_sparse) {
            ret = read_extent(s, &e, buf);
            if (ret < 0) {
                img_error("error while reading at byte %" G_GINT64_FORMAT
                          ": %s", e.offset, g_strerror(-ret));
                set_error(s, ret);
                break;
            }
        }

        if (s->wr_in_order) {
            g_mutex_lock(&s->lock);
            while (s->write_seq != e.seq && !s->ret) {
                g_cond_wait(&s->cond, &s->lock);
            }
            ret = s->ret;
            g_mutex_unlock(&s->lock);
            if (ret) {
                break;
            }
        }

        ret = write_extent(s, &e, buf);
        if (ret < 0) {
            img_error("error while writing at byte %" G_GINT64_FORMAT ": %s",
                      e.offset, g_strerror(-ret));
            set_error(s, ret);
            break;
        }

        g_mutex_lock(&s->lock);
        if (s->wr_in_order) {
            s->write_seq++;
            g_cond_broadcast(&s->cond);
        }
        if (e.status == EXTENT_DATA || (!s->min_sparse &&
                                        e.status == EXTENT_ZERO)) {
            s->allocated_done += e.bytes;
            img_progress_print(100.0 * s->allocated_done /
                               MAX(s->allocated_total, 1), 0);
        }
        g_mutex_unlock(&s->lock);
    }
    free(buf);
    return NULL;
}

/* What -p's percentage is relative to: bytes that will be copied. */
static int count_allocated(ConvertState *s)
{
    int64_t offset = 0;

    s->allocated_total = 0;
    while (offset < s->total_size) {
        ExtentStatus st;
        int64_t pnum;
        int ret = status_run(s, offset, &st, &pnum);

        if (ret < 0) {
            return ret;
        }
        if (st == EXTENT_DATA || (!s->min_sparse && st == EXTENT_ZERO)) {
            s->allocated_total += pnum;
        }
        offset += pnum;
    }
    return 0;
}

static int convert_do_copy(ConvertState *s, bool progress)
{
    GThread *threads[MAX_WORKERS];
    int ret;

    /* qemu-img walks the block status once before copying; with
     * --salvage that walk's warnings are part of its output, so it is
     * made then too (and skipped otherwise: nothing else needs it). */
    if (progress || s->salvage) {
        ret = count_allocated(s);
        if (ret < 0) {
            return ret;
        }
    }
    g_mutex_init(&s->lock);
    g_cond_init(&s->cond);
    for (int i = 0; i < s->num_workers; i++) {
        threads[i] = g_thread_new("convert", convert_worker, s);
    }
    for (int i = 0; i < s->num_workers; i++) {
        g_thread_join(threads[i]);
    }
    g_mutex_clear(&s->lock);
    g_cond_clear(&s->cond);
    return s->ret;
}

/* The target's create options ask for encryption. */
static bool target_encrypted(ImgCreateOpts *copts)
{
    const char *old = img_create_opts_get(copts, "encryption");

    return img_create_opts_get(copts, "encrypt.format") ||
           (old && strcmp(old, "off") && strcmp(old, "no") &&
            strcmp(old, "false"));
}

/* -c: the target must compress, and its cluster size fit our buffer. */
static bool convert_compressed_setup(ConvertState *s)
{
    BlockDriverInfo bdi;

    if (!bdrv_driver_can_compress(
            bdrv_find_format(bdrv_get_format_name(s->target)))) {
        img_error("Compression not supported for this file format");
        return false;
    }
    if (bdrv_get_info(s->target, &bdi) < 0) {
        img_error("could not get block driver info");
        return false;
    }
    if (bdi.cluster_size <= 0 || bdi.cluster_size > BUF_SIZE) {
        img_error("invalid cluster size");
        return false;
    }
    s->cluster_size = bdi.cluster_size;
    return true;
}

/* Builds the target's creation options from -o, -B and -F. */
static ImgCreateOpts *target_create_opts(const char *out_fmt,
                                         const char *options,
                                         const char *out_baseimg,
                                         const char *backing_fmt,
                                         int64_t size)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(ImgCreateOpts) o = img_create_opts_new(out_fmt, &err);
    g_autofree char *size_str = g_strdup_printf("%" G_GINT64_FORMAT, size);

    if (!o) {
        img_error("%s", err->message);
        return NULL;
    }
    if (options && !img_create_opts_parse(o, options, &err)) {
        img_error("%s", err->message);
        return NULL;
    }
    img_create_opts_set(o, "size", size_str);
    if (out_baseimg && !img_create_opts_set(o, "backing_file", out_baseimg)) {
        img_error("Backing file not supported for file format '%s'", out_fmt);
        return NULL;
    }
    if (backing_fmt && !img_create_opts_set(o, "backing_fmt", backing_fmt)) {
        img_error("Backing file format not supported for file format '%s'",
                  out_fmt);
        return NULL;
    }
    return g_steal_pointer(&o);
}

/* ---- convert -l (resize branch): an internal snapshot as the source ---- */

/* Loads the snapshot in place of the (single) source, as qemu-img does
 * after taking the sources' sizes. */
static bool convert_load_snapshot(ConvertState *s, const char *param)
{
    int64_t len;

    if (s->src_num > 1 && !g_str_has_prefix(param, "snapshot.")) {
        img_error("No support for concatenating multiple snapshot");
        return false;
    }
    if (!img_load_snapshot(s->src[0].bs, param)) {
        return false;
    }
    /* The target keeps the active image's size, as with qemu-img; what
     * lies past a shorter snapshot's end reads as zeroes. */
    len = bdrv_getlength(s->src[0].bs);
    if (len >= 0 && len < s->src[0].len) {
        s->src[0].len = len;
    }
    return true;
}

/* --bitmaps: one source that can hold bitmaps, none of them in use
 * unless --skip-broken-bitmaps (qemu-img's checks and texts). */
static bool bitmaps_copyable(ConvertState *s, bool skip_broken)
{
    g_autoptr(GPtrArray) list = NULL;

    if (s->src_num > 1) {
        img_error("Copying bitmaps only possible with single source");
        return false;
    }
    if (!bdrv_supports_bitmaps(s->src[0].bs)) {
        img_error("Source lacks bitmap support");
        return false;
    }
    list = bdrv_bitmap_list(s->src[0].bs, NULL);
    /* newest first, as qemu-img, so it names the same bitmap */
    for (guint i = list ? list->len : 0; !skip_broken && i-- > 0;) {
        BdrvBitmapInfo *bi = g_ptr_array_index(list, i);
        if (bi->in_use) {
            img_error("Cannot copy inconsistent bitmap '%s'", bi->name);
            fprintf(stderr, "Try --skip-broken-bitmaps, or use 'qemu-img "
                    "bitmap --remove' to delete it\n");
            return false;
        }
    }
    return true;
}

/* Each bitmap of src made in dst (same granularity and state) and given
 * src's bits.  Newest first, as qemu-img walks them: dst then stores
 * them in src's order. */
static bool copy_bitmaps(BlockDriverState *src, BlockDriverState *dst,
                         bool skip_broken)
{
    g_autoptr(GPtrArray) list = bdrv_bitmap_list(src, NULL);

    for (guint i = list ? list->len : 0; i-- > 0;) {
        BdrvBitmapInfo *bi = g_ptr_array_index(list, i);
        BdrvBitmapRequest add = {
            .op = BDRV_BITMAP_ADD, .name = bi->name,
            .granularity = bi->granularity, .disabled = !bi->auto_,
        };
        BdrvBitmapRequest merge = {
            .op = BDRV_BITMAP_MERGE, .name = bi->name, .src_bs = src,
            .src_name = bi->name,
        };
        g_autoptr(GError) err = NULL;

        if (skip_broken && bi->in_use) {
            fprintf(stderr, "%s: warning: Skipping inconsistent bitmap "
                    "'%s'\n", img_progname, bi->name);
            continue;
        }
        if (!bdrv_bitmap_modify(dst, &add, NULL, &err)) {
            img_error("Failed to create bitmap %s: %s", bi->name,
                      err->message);
            return false;
        }
        if (!bdrv_bitmap_modify(dst, &merge, NULL, &err)) {
            BdrvBitmapRequest rm = { .op = BDRV_BITMAP_REMOVE,
                                     .name = bi->name };
            img_error("Failed to populate bitmap %s: %s", bi->name,
                      err->message);
            bdrv_bitmap_modify(dst, &rm, NULL, NULL);
            return false;
        }
    }
    return true;
}

int img_convert(int argc, char **argv)
{
    static const struct option long_options[] = {
        { "help", no_argument, NULL, 'h' },
        { "object", required_argument, NULL, OPT_OBJECT },
        { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
        { "force-share", no_argument, NULL, 'U' },
        { "target-image-opts", no_argument, NULL, OPT_TARGET_IMAGE_OPTS },
        { "salvage", no_argument, NULL, OPT_SALVAGE },
        { "target-is-zero", no_argument, NULL, OPT_TARGET_IS_ZERO },
        { "bitmaps", no_argument, NULL, OPT_BITMAPS },
        { "skip-broken-bitmaps", no_argument, NULL, OPT_SKIP_BROKEN },
        { NULL, 0, NULL, 0 },
    };
    /*
     * The shared options (-f, -T, -U, -q, --image-opts) describe the
     * sources; the target keeps its own -O, -t, flags and
     * --target-image-opts.
     */
    ImgCommonOpts src_opts = IMG_COMMON_OPTS_INIT(BDRV_O_NO_SHARE);
    const char *out_fmt = NULL;
    const char *cache = "unsafe";
    const char *out_baseimg = NULL, *backing_fmt = NULL;
    const char *out_filename;
    g_autofree char *options = NULL;
    g_autofree ConvertSource *src = NULL;
    g_autoptr(ImgCreateOpts) copts = NULL;
    g_autoptr(BlockDriverState) target = NULL;
    g_autoptr(GHashTable) secret_opts = bdrv_opts_new();
    ConvertState s = {
        .min_sparse = DEFAULT_SPARSE,
        .wr_in_order = true,
        .num_workers = 8,
    };
    bool progress = false, skip_create = false;
    const char *snapshot_param = NULL;   /* -l (resize branch) */
    bool tgt_image_opts = false, target_is_zero = false;
    bool copy_range = false, explicit_sparse = false;
    bool bitmaps = false, skip_broken = false;
    int flags = BDRV_O_RDWR; /* as qemu-img */
    int64_t sval;
    long long lval;
    int ret = 1, c;

    while ((c = getopt_long(argc, argv, ":hf:O:B:CcF:o:l:S:pt:T:qnm:WUr:",
                            long_options, NULL)) != -1) {
        switch (c) {
        case 'O':
            out_fmt = optarg;
            break;
        case 'B':
            out_baseimg = optarg;
            break;
        case 'C':
            /* copy offloading: strata always copies through memory, but
             * the options QEMU refuses with it are refused alike */
            copy_range = true;
            break;
        case 'c':
            s.compressed = true;
            break;
        case 'F':
            backing_fmt = optarg;
            break;
        case 'o':
            if (!img_add_option_list(&options, optarg)) {
                return 1;
            }
            break;
        case 'l':
            /* convert -l (resize branch): checked and loaded after open */
            if (!img_check_snapshot_param(optarg)) {
                return 1;
            }
            snapshot_param = optarg;
            break;
        case 'S':
            if (!img_cvtnum("buffer size for sparse output", optarg, &sval)) {
                return 1;
            }
            if (sval % BDRV_SECTOR_SIZE || sval > MAX_BUF_SIZE) {
                img_error("Invalid buffer size for sparse output specified. "
                          "Valid sizes are multiples of %d up to %d. Select "
                          "0 to disable sparse detection (fully allocates "
                          "output).", BDRV_SECTOR_SIZE, MAX_BUF_SIZE);
                return 1;
            }
            s.min_sparse = sval;
            explicit_sparse = true;
            break;
        case 'p':
            progress = true;
            break;
        case 't':
            cache = optarg;
            break;
        case 'n':
            skip_create = true;
            break;
        case 'm':
            if (!img_parse_long(optarg, 1, MAX_COROUTINES, &lval)) {
                img_error("Invalid number of coroutines. Allowed number of "
                          "coroutines is between 1 and %d", MAX_COROUTINES);
                return 1;
            }
            s.num_workers = (int)lval;
            break;
        case 'W':
            s.wr_in_order = false;
            break;
        case 'r':
            if (!img_cvtnum("rate limit", optarg, &sval)) {
                return 1;
            }
            /* accepted for compatibility; strata does not throttle */
            break;
        case OPT_TARGET_IMAGE_OPTS:
            tgt_image_opts = true;
            break;
        case OPT_SALVAGE:
            s.salvage = true;
            break;
        case OPT_TARGET_IS_ZERO:
            target_is_zero = true;
            break;
        case OPT_BITMAPS:
            bitmaps = true;
            break;
        case OPT_SKIP_BROKEN:
            skip_broken = true;
            break;
        default:
            img_common_opt(c, argv, &src_opts);
            break;
        }
    }

    if (!out_fmt && !tgt_image_opts) {
        out_fmt = "raw";
    }
    if (skip_broken && !bitmaps) {
        img_error("Use of --skip-broken-bitmaps requires --bitmaps");
        return 1;
    }
    /* -C is accepted (strata always copies through memory), but refused
     * with what qemu-img refuses it with */
    if (s.compressed && copy_range) {
        img_error("Cannot enable copy offloading when -c is used");
        return 1;
    }
    if (explicit_sparse && copy_range) {
        img_error("Cannot enable copy offloading when -S is used");
        return 1;
    }
    if (copy_range && s.salvage) {
        img_error("Cannot use copy offloading in salvaging mode");
        return 1;
    }
    if (tgt_image_opts && !skip_create) {
        img_error("--target-image-opts requires use of -n flag");
        return 1;
    }
    /* convert -n rules (resize branch) */
    if (skip_create && options) {
        img_error("-o has no effect when skipping image creation");
        return 1;
    }
    if (target_is_zero && !skip_create) {
        img_error("--target-is-zero requires use of -n flag");
        return 1;
    }
    if (!img_common_check_format(&src_opts)) {
        return 1;
    }

    s.src_num = argc - optind - 1;
    out_filename = s.src_num >= 1 ? argv[argc - 1] : NULL;
    if (options && img_has_help_option(options)) {
        return img_print_create_option_help(out_filename, out_fmt);
    }
    if (s.src_num < 1) {
        img_error("Must specify image file name");
        return 1;
    }
    if (!img_common_apply_cache(&src_opts, "source cache")) {
        return 1;
    }
    if (!img_parse_cache_mode(cache, &flags, &s.writethrough)) {
        img_error("Invalid cache option: %s", cache);
        return 1;
    }

    if (src_opts.quiet) {
        progress = false;
    }
    img_progress_init(progress, 1.0);
    img_progress_print(0, 100);

    src = g_new0(ConvertSource, s.src_num);
    s.src = src;
    for (int i = 0; i < s.src_num; i++) {
        src[i].filename = argv[optind + i];
        src[i].bs = img_open_common(&src_opts, src[i].filename, 0);
        if (!src[i].bs) {
            goto out;
        }
        src[i].len = bdrv_getlength(src[i].bs);
        if (src[i].len < 0) {
            img_error("Could not get size of %s: %s", src[i].filename,
                      g_strerror(-src[i].len));
            goto out;
        }
        src[i].padded = (src[i].len + BDRV_SECTOR_SIZE - 1) /
                        BDRV_SECTOR_SIZE * BDRV_SECTOR_SIZE;
        src[i].start = s.total_size;
        s.total_size += src[i].padded;
        {
            BlockDriverInfo bdi;
            src[i].alignment = BDRV_SECTOR_SIZE;
            if (bdrv_get_info(src[i].bs, &bdi) >= 0 && bdi.cluster_size > 0) {
                src[i].alignment = MAX(src[i].alignment, bdi.cluster_size);
            }
        }
    }

    /* convert -l (resize branch) */
    if (snapshot_param && !convert_load_snapshot(&s, snapshot_param)) {
        goto out;
    }
    if (bitmaps && !bitmaps_copyable(&s, skip_broken)) {
        goto out;
    }

    if (!skip_create) {
        copts = target_create_opts(out_fmt, options, out_baseimg, backing_fmt,
                                   s.total_size);
        if (!copts) {
            goto out;
        }
        /* -o backing_file= counts as -B */
        out_baseimg = img_create_opts_get(copts, "backing_file");
    }
    s.target_has_backing = out_baseimg != NULL;
    if (s.src_num > 1 && out_baseimg) {
        img_error("Having a backing file for the target makes no sense when "
                  "concatenating multiple input images");
        goto out;
    }
    if (copts && out_baseimg && !img_create_opts_get(copts, "backing_fmt")) {
        img_error("Use of backing file requires explicit backing format");
        goto out;
    }

    if (s.compressed && out_fmt &&
        !bdrv_driver_can_compress(bdrv_find_format(out_fmt))) {
        img_error("Compression not supported for this file format");
        goto out;
    }
    /* compressed clusters are stored as they are, never encrypted */
    if (s.compressed && copts && target_encrypted(copts)) {
        img_error("Compression and encryption not supported at the same "
                  "time");
        goto out;
    }
    if (!skip_create) {
        g_autoptr(GError) err = NULL;
        g_autoptr(GHashTable) bopts = img_create_opts_to_block_opts(copts);

        if (!bdrv_create(out_fmt, out_filename, bopts, &err)) {
            img_error("%s: error while converting %s: %s", out_filename,
                      out_fmt, err->message);
            goto out;
        }
    }

    if (copts && !skip_create) {
        /* a target created encrypted opens with the key it was made with */
        static const char *const keys[] = { "encrypt.key-secret",
                                            "key-secret", NULL };
        for (int i = 0; keys[i]; i++) {
            if (img_create_opts_get(copts, keys[i])) {
                bdrv_opts_set(secret_opts, keys[i],
                              img_create_opts_get(copts, keys[i]));
            }
        }
    }
    target = img_open_extra(tgt_image_opts, out_filename,
                            tgt_image_opts ? NULL : out_fmt, flags,
                            src_opts.quiet, secret_opts);
    if (!target) {
        goto out;
    }
    s.target = target;
    if (bitmaps && !bdrv_supports_bitmaps(target)) {
        img_error("Format driver '%s' does not support bitmaps",
                  bdrv_get_format_name(target));
        goto out;
    }
    if (s.compressed && !convert_compressed_setup(&s)) {
        goto out;
    }

    if (skip_create) {
        int64_t out_len = bdrv_getlength(target);
        if (out_len < 0) {
            img_error("unable to get output image length: %s",
                      g_strerror(-out_len));
            goto out;
        }
        if (out_len < s.total_size) {
            img_error("output file is smaller than input file");
            goto out;
        }
    }

    /* A new image without backing file reads as zeroes where we do not
     * write; an existing one only if the user says so. */
    if (skip_create) {
        s.has_zero_init = target_is_zero;
    } else {
        BlockDriverInfo tbdi;
        s.has_zero_init = s.min_sparse && !s.target_has_backing &&
                          !(bdrv_get_info(s.target, &tbdi) == 0 &&
                            tbdi.no_zero_init);
    }
    s.alignment = BDRV_SECTOR_SIZE;
    if (s.min_sparse) {
        while (s.alignment * 2 <= s.min_sparse) {
            s.alignment *= 2;
        }
    }
    s.num_workers = CLAMP(s.num_workers, 1, MAX_WORKERS);
    /* --salvage (resize branch): one worker, so that the warnings come
     * in offset order */
    if (s.salvage) {
        s.num_workers = 1;
        s.salvage_quiet = src_opts.quiet;
    }

    if (convert_do_copy(&s, progress) < 0) {
        goto out;
    }
    if (bitmaps && !copy_bitmaps(src[0].bs, target, skip_broken)) {
        goto out;
    }
    /* -c packs data byte by byte: the end of the file to a whole sector */
    if (s.compressed && bdrv_pwrite_compressed(target, 0, 0, NULL) < 0) {
        goto out;
    }
    {
        int fret = bdrv_flush(target);
        if (fret < 0) {
            img_error("error while flushing the target image: %s",
                      g_strerror(-fret));
            goto out;
        }
    }
    ret = 0;

out:
    if (ret == 0) {
        img_progress_print(100, 0);
    }
    img_progress_end();
    for (int i = 0; src && i < s.src_num; i++) {
        if (src[i].bs) {
            bdrv_unref(src[i].bs);
        }
    }
    return ret;
}
