/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The generic I/O path: request validation, in-flight accounting and drain,
 * and alignment.  Drivers receive requests aligned to their
 * request_alignment; unaligned writes become serialised read-modify-write
 * so two partial writes to one block never lose each other's bytes.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/block_int.h"

#define ZERO_CHUNK (1 << 20)

static bool ranges_overlap(int64_t a, int64_t alen, int64_t b, int64_t blen)
{
    return a < b + blen && b < a + alen;
}

/* Waits on bs->cond, counted so request_end can skip the wake-up (a
 * futex call) when nobody waits: the common case on the I/O path. */
static void bs_wait(BlockDriverState *bs)
{
    bs->waiters++;
    g_cond_wait(&bs->cond, &bs->lock);
    bs->waiters--;
}

/*
 * Whether req must wait: an overlapping request is in flight and one of
 * the two is serialising.  Only requests in bs->tracked count, and a
 * request joins that list only once it stops waiting: two waiting
 * requests never wait for each other (that was a deadlock between
 * concurrent read-modify-writes sharing a block), and whichever wakes
 * first goes while the other sees it in flight and keeps waiting.
 */
static bool tracked_conflicts(BlockDriverState *bs, BdrvTrackedRequest *req)
{
    for (BdrvTrackedRequest *r = bs->tracked; r; r = r->next) {
        if ((r->serialising || req->serialising) &&
            ranges_overlap(r->offset, r->bytes, req->offset, req->bytes)) {
            return true;
        }
    }
    return false;
}

/*
 * Enters a request: waits while bs is drained (unless we are the drainer)
 * and, on nodes that need alignment, while an overlapping request that
 * conflicts with it is in flight.  The tracked range is widened to whole
 * blocks, the unit a read-modify-write rewrites.
 */
static void request_begin(BlockDriverState *bs, BdrvTrackedRequest *req,
                          int64_t offset, int64_t bytes, bool serialising)
{
    GThread *self = g_thread_self();

    g_mutex_lock(&bs->lock);
    while (bs->quiesce_counter > 0 && bs->drain_owner != self) {
        bs_wait(bs);
    }
    /* Counted from here: a drain waits for us, including while we wait
     * for a conflict, which can only be a request already in flight. */
    bs->in_flight++;
    if (req) {
        uint32_t al = bs->request_alignment;
        req->offset = offset / al * al;
        req->bytes = (offset + bytes + al - 1) / al * al - req->offset;
        req->serialising = serialising;
        while (tracked_conflicts(bs, req)) {
            bs_wait(bs);
        }
        req->next = bs->tracked;
        bs->tracked = req;
    }
    g_mutex_unlock(&bs->lock);
}

/* request_begin for an untracked request that must not wait: false
 * (nothing counted) while another thread drains bs. */
static bool request_try_begin(BlockDriverState *bs)
{
    bool ok;

    g_mutex_lock(&bs->lock);
    ok = bs->quiesce_counter == 0 || bs->drain_owner == g_thread_self();
    if (ok) {
        bs->in_flight++;
    }
    g_mutex_unlock(&bs->lock);
    return ok;
}

static void request_end(BlockDriverState *bs, BdrvTrackedRequest *req)
{
    g_mutex_lock(&bs->lock);
    if (req) {
        BdrvTrackedRequest **pp = &bs->tracked;
        while (*pp != req) {
            pp = &(*pp)->next;
        }
        *pp = req->next;
    }
    bs->in_flight--;
    if (bs->waiters) {
        g_cond_broadcast(&bs->cond);
    }
    g_mutex_unlock(&bs->lock);
}

void bdrv_drained_begin(BlockDriverState *bs)
{
    GThread *self = g_thread_self();

    g_mutex_lock(&bs->lock);
    /* A second drainer waits for the first to finish. */
    while (bs->quiesce_counter > 0 && bs->drain_owner != self) {
        bs_wait(bs);
    }
    bs->quiesce_counter++;
    bs->drain_owner = self;
    while (bs->in_flight > 0) {
        bs_wait(bs);
    }
    g_mutex_unlock(&bs->lock);
}

void bdrv_drained_end(BlockDriverState *bs)
{
    g_mutex_lock(&bs->lock);
    g_assert(bs->quiesce_counter > 0);
    if (--bs->quiesce_counter == 0) {
        bs->drain_owner = NULL;
        g_cond_broadcast(&bs->cond);
    }
    g_mutex_unlock(&bs->lock);
}

/*
 * Requests are tracked only where read-modify-write happens (alignment
 * above one byte): there every request that changes or reads blocks a
 * read-modify-write touches must be visible to it, including zero writes
 * and discards, or the RMW could write back stale bytes over them.
 */
static bool tracks_requests(BlockDriverState *bs)
{
    return bs->request_alignment > 1;
}

static int check_request(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    if (!bs->drv) {
        return -ENOMEDIUM;
    }
    if (offset < 0 || bytes < 0 || offset > INT64_MAX - bytes) {
        return -EINVAL;
    }
    return 0;
}

static bool is_aligned(BlockDriverState *bs, int64_t offset, int64_t bytes,
                       const void *buf)
{
    uint32_t al = bs->request_alignment;

    return offset % al == 0 && bytes % al == 0 &&
           (uintptr_t)buf % bs->buf_alignment == 0;
}

static void *aligned_alloc_buf(BlockDriverState *bs, size_t size)
{
    void *p = NULL;
    size_t al = MAX(bs->buf_alignment, sizeof(void *));

    if (posix_memalign(&p, al, MAX(size, 1)) != 0) {
        return NULL;
    }
    return p;
}

/* Reads the aligned range covering [offset, offset+bytes) into a bounce
 * buffer and copies the requested part out. */
static int read_unaligned(BlockDriverState *bs, int64_t offset, int64_t bytes,
                          void *buf)
{
    uint32_t al = bs->request_alignment;
    int64_t start = offset / al * al;
    int64_t end = (offset + bytes + al - 1) / al * al;
    uint8_t *bounce = aligned_alloc_buf(bs, end - start);
    int ret;

    if (!bounce) {
        return -ENOMEM;
    }
    ret = bs->drv->pread(bs, start, end - start, bounce);
    if (ret == 0) {
        memcpy(buf, bounce + (offset - start), bytes);
    }
    free(bounce);
    return ret;
}

/* Read-modify-write; the caller holds a serialising request on the range. */
static int write_unaligned(BlockDriverState *bs, int64_t offset,
                           int64_t bytes, const void *buf)
{
    uint32_t al = bs->request_alignment;
    int64_t start = offset / al * al;
    int64_t end = (offset + bytes + al - 1) / al * al;
    uint8_t *bounce = aligned_alloc_buf(bs, end - start);
    int ret = 0;

    if (!bounce) {
        return -ENOMEM;
    }
    bool head = start != offset;
    bool tail = end != offset + bytes;
    if (head) {
        ret = bs->drv->pread(bs, start, al, bounce);
    }
    /* the tail block needs its own read unless the head read covered it */
    if (ret == 0 && tail && !(head && end - al == start)) {
        ret = bs->drv->pread(bs, end - al, al, bounce + (end - al - start));
    }
    if (ret == 0) {
        memcpy(bounce + (offset - start), buf, bytes);
        ret = bs->drv->pwrite(bs, start, end - start, bounce);
    }
    free(bounce);
    return ret;
}

int bdrv_pread(BlockDriverState *bs, int64_t offset, int64_t bytes, void *buf)
{
    int ret = check_request(bs, offset, bytes);
    BdrvTrackedRequest req;
    BdrvTrackedRequest *preq = tracks_requests(bs) ? &req : NULL;

    if (ret < 0 || bytes == 0) {
        return ret;
    }
    if (!bs->drv->pread) {
        return -ENOTSUP;
    }
    request_begin(bs, preq, offset, bytes, false);
    if (is_aligned(bs, offset, bytes, buf)) {
        ret = bs->drv->pread(bs, offset, bytes, buf);
    } else {
        ret = read_unaligned(bs, offset, bytes, buf);
    }
    request_end(bs, preq);
    return ret;
}

/* ---- asynchronous requests ---- */

/* One node's part of an asynchronous request: what its driver was handed,
 * with the node counted in flight until the driver's completion. */
typedef struct {
    BdrvAio inner;              /* first: the completion gets its address */
    BlockDriverState *bs;
    BdrvAio *outer;             /* the caller's request */
} AioLevel;

static void aio_level_done(BdrvAio *inner, int ret)
{
    AioLevel *l = (AioLevel *)inner;
    BdrvAio *outer = l->outer;

    request_end(l->bs, NULL);
    g_free(l);
    outer->cb(outer, ret);
}

/* Only nodes that track no requests: a read-modify-write must see every
 * request in its range, which an asynchronous one would slip past. */
/* detect-zeroes: a write whose data is all zero, on a node that has a
 * zero write, is done as one (QEMU tests the same thing). */
static bool detect_zero_write(BlockDriverState *bs, int64_t bytes,
                              const void *buf)
{
    const unsigned char *p = buf;

    if (bs->detect_zeroes == BDRV_DETECT_ZEROES_OFF ||
        !bs->drv->pwrite_zeroes || bytes == 0 || p[0] != 0) {
        return false;
    }
    return memcmp(p, p + 1, (size_t)bytes - 1) == 0;
}

bool bdrv_aio_supported(BlockDriverState *bs)
{
    BlockDriver *drv = bs->drv;

    return drv && drv->aio_submit && !tracks_requests(bs) &&
           (!drv->aio_supported || drv->aio_supported(bs));
}

int bdrv_aio_submit(BlockDriverState *bs, BdrvAio *aio)
{
    int ret = check_request(bs, aio->offset, aio->bytes);
    AioLevel *l;

    if (ret < 0) {
        return ret;
    }
    if (aio->bytes == 0 || !bdrv_aio_supported(bs) ||
        !is_aligned(bs, aio->offset, aio->bytes, aio->buf)) {
        return -ENOTSUP;
    }
    if (aio->op == BDRV_AIO_WRITE && bs->read_only) {
        return -EPERM;
    }
    /* a zero write has no asynchronous path: the synchronous call */
    if (aio->op == BDRV_AIO_WRITE &&
        detect_zero_write(bs, aio->bytes, aio->buf)) {
        return -ENOTSUP;
    }
    /* a drained node: the synchronous call waits, the submitter must not */
    if (!request_try_begin(bs)) {
        return -ENOTSUP;
    }
    l = g_new(AioLevel, 1);
    l->inner = *aio;
    l->inner.cb = aio_level_done;
    l->bs = bs;
    l->outer = aio;
    ret = bs->drv->aio_submit(bs, &l->inner);
    if (ret < 0) {
        request_end(bs, NULL);
        g_free(l);
    }
    return ret;
}

/* Copies a block-aligned request from a misaligned buffer: no read needed,
 * so nothing to serialise. */
static int write_bounced(BlockDriverState *bs, int64_t offset, int64_t bytes,
                         const void *buf)
{
    void *bounce = aligned_alloc_buf(bs, bytes);
    int ret;

    if (!bounce) {
        return -ENOMEM;
    }
    memcpy(bounce, buf, bytes);
    ret = bs->drv->pwrite(bs, offset, bytes, bounce);
    free(bounce);
    return ret;
}

int bdrv_pwrite(BlockDriverState *bs, int64_t offset, int64_t bytes,
                const void *buf)
{
    int ret = check_request(bs, offset, bytes);
    BdrvTrackedRequest req;
    BdrvTrackedRequest *preq = tracks_requests(bs) ? &req : NULL;
    uint32_t al = bs->request_alignment;
    /* Only a read-modify-write serialises: it must not interleave with
     * anything else touching the blocks it rewrites. */
    bool rmw = offset % al != 0 || bytes % al != 0;

    if (ret < 0 || bytes == 0) {
        return ret;
    }
    if (bs->read_only) {
        return -EPERM;
    }
    if (!bs->drv->pwrite) {
        return -ENOTSUP;
    }
    if (detect_zero_write(bs, bytes, buf)) {
        return bdrv_pwrite_zeroes_root(bs, offset, bytes,
                                       bs->detect_zeroes ==
                                       BDRV_DETECT_ZEROES_UNMAP ?
                                       BDRV_REQ_MAY_UNMAP : 0);
    }
    request_begin(bs, preq, offset, bytes, rmw);
    if (rmw) {
        ret = write_unaligned(bs, offset, bytes, buf);
    } else if (is_aligned(bs, offset, bytes, buf)) {
        ret = bs->drv->pwrite(bs, offset, bytes, buf);
    } else {
        ret = write_bounced(bs, offset, bytes, buf);
    }
    request_end(bs, preq);
    return ret;
}

bool bdrv_driver_can_compress(BlockDriver *drv)
{
    return drv && drv->pwrite_compressed;
}

/* Passed to the driver as is: compressed data has no alignment to keep,
 * and only the driver knows which requests it can compress. */
int bdrv_pwrite_compressed(BlockDriverState *bs, int64_t offset,
                           int64_t bytes, const void *buf)
{
    int ret = check_request(bs, offset, bytes);

    if (ret < 0) {
        return ret;
    }
    if (!bdrv_driver_can_compress(bs->drv)) {
        return -ENOTSUP;
    }
    if (bs->read_only) {
        return -EPERM;
    }
    request_begin(bs, NULL, offset, bytes, false);
    ret = bs->drv->pwrite_compressed(bs, offset, bytes, buf);
    request_end(bs, NULL);
    return ret;
}

/*
 * Copy-on-read (qemu-io -C, the copy-on-read filter): a read whose
 * clusters bs does not hold yet copies them up from its backing chain,
 * whole clusters at a time; a run that reads as zeroes becomes a zero
 * write (qcow2: zero clusters), as QEMU does.  As in QEMU, the read is
 * served by the same walk (held parts read in place, copied parts from
 * what was copied), so no request follows the copy's cor_write event.
 * The content seen does not change, so no write notifier needs to know.
 */
#define COR_CHUNK (1024 * 1024)

static bool buffer_is_zero(const uint8_t *p, int64_t n)
{
    return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/* One run [start, start+n) the walk found not held by bs: read, handed to
 * the caller's part of it, written back. */
static int copy_up_run(BlockDriverState *bs, int64_t start, int64_t n,
                       uint8_t *bounce, int64_t offset, int64_t bytes,
                       uint8_t *buf)
{
    int64_t from = MAX(start, offset), to = MIN(start + n, offset + bytes);
    int ret = bdrv_pread(bs, start, n, bounce);

    if (ret < 0) {
        return ret;
    }
    if (from < to) {
        memcpy(buf + (from - offset), bounce + (from - start), to - from);
    }
    bdrv_debug_event(bs, "cor_write");
    return buffer_is_zero(bounce, n) ? bdrv_pwrite_zeroes(bs, start, n, 0)
                                     : bdrv_pwrite(bs, start, n, bounce);
}

int bdrv_pread_copy_on_read(BlockDriverState *bs, int64_t offset,
                            int64_t bytes, void *buf)
{
    BlockDriverInfo bdi = { 0 };
    int64_t len = bdrv_getlength(bs), cs, end, pos;
    g_autofree uint8_t *bounce = NULL;
    int ret = check_request(bs, offset, bytes);

    if (ret < 0 || bytes == 0) {
        return ret;
    }
    if (len < 0) {
        return (int)len;
    }
    /* Without a backing file too: unallocated clusters become zero
     * clusters, as QEMU's copy-on-read leaves them. */
    cs = bdrv_get_info(bs, &bdi) == 0 && bdi.cluster_size > 0 ?
         bdi.cluster_size : 65536;
    end = MIN(len, (offset + bytes + cs - 1) / cs * cs);
    pos = offset / cs * cs;
    bounce = g_malloc(MAX(COR_CHUNK, cs));
    while (pos < end) {
        int64_t n = 0, map = 0, from, to;
        BlockDriverState *file = NULL;
        int st = bdrv_block_status(bs, pos, MIN(end - pos,
                                                MAX(COR_CHUNK, cs)),
                                   &n, &map, &file);
        if (st < 0) {
            return st;
        }
        if (n <= 0) {
            /* nothing known here: read the rest as it is */
            n = end - pos;
            st = BDRV_BLOCK_ALLOCATED;
        }
        if (!(st & BDRV_BLOCK_ALLOCATED)) {
            ret = copy_up_run(bs, pos, n, bounce, offset, bytes, buf);
        } else {
            from = MAX(pos, offset);
            to = MIN(pos + n, offset + bytes);
            ret = from < to ? bdrv_pread(bs, from, to - from,
                                         (uint8_t *)buf + (from - offset))
                            : 0;
        }
        if (ret < 0) {
            return ret;
        }
        pos += n;
    }
    return 0;
}

/* Writes zeroes with plain writes, for drivers that cannot do better. */
static int write_zeroes_fallback(BlockDriverState *bs, int64_t offset,
                                 int64_t bytes)
{
    size_t chunk = MIN(bytes, ZERO_CHUNK);
    void *zeroes = aligned_alloc_buf(bs, chunk);
    int ret = 0;

    if (!zeroes) {
        return -ENOMEM;
    }
    memset(zeroes, 0, chunk);
    while (bytes > 0 && ret == 0) {
        int64_t n = MIN(bytes, (int64_t)chunk);
        ret = bdrv_pwrite(bs, offset, n, zeroes);
        offset += n;
        bytes -= n;
    }
    free(zeroes);
    return ret;
}

int bdrv_pwrite_zeroes(BlockDriverState *bs, int64_t offset, int64_t bytes,
                       int flags)
{
    if (bs->open_flags & BDRV_O_IGNORE_DISCARD) {
        flags &= ~BDRV_REQ_MAY_UNMAP;  /* zeroes, but nothing unmapped */
    }
    return bdrv_pwrite_zeroes_root(bs, offset, bytes, flags);
}

int bdrv_pwrite_zeroes_root(BlockDriverState *bs, int64_t offset,
                            int64_t bytes, int flags)
{
    int ret = check_request(bs, offset, bytes);
    uint32_t al;
    int64_t head, tail;

    if (ret < 0 || bytes == 0) {
        return ret;
    }
    if (bs->read_only) {
        return -EPERM;
    }
    if (!bs->drv->pwrite_zeroes) {
        if (flags & BDRV_REQ_NO_FALLBACK) {
            return -ENOTSUP;
        }
        return write_zeroes_fallback(bs, offset, bytes);
    }
    /* Unaligned edges are written as data, the aligned middle by the
     * driver's efficient path. */
    al = bs->request_alignment;
    head = MIN(bytes, (al - offset % al) % al);
    if (head) {
        ret = write_zeroes_fallback(bs, offset, head);
        if (ret < 0) {
            return ret;
        }
        offset += head;
        bytes -= head;
    }
    tail = bytes % al;
    bytes -= tail;
    if (bytes) {
        BdrvTrackedRequest req;
        BdrvTrackedRequest *preq = tracks_requests(bs) ? &req : NULL;
        request_begin(bs, preq, offset, bytes, false);
        ret = bs->drv->pwrite_zeroes(bs, offset, bytes, flags);
        request_end(bs, preq);
        if (ret == -ENOTSUP && !(flags & BDRV_REQ_NO_FALLBACK)) {
            ret = write_zeroes_fallback(bs, offset, bytes);
        }
        if (ret < 0) {
            return ret;
        }
    }
    if (tail) {
        ret = write_zeroes_fallback(bs, offset + bytes, tail);
    }
    return ret;
}

int bdrv_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    int ret = check_request(bs, offset, bytes);

    if (ret < 0 || bytes == 0) {
        return ret;
    }
    if (bs->read_only) {
        return -EPERM;
    }
    if (!bs->drv->pdiscard || (bs->open_flags & BDRV_O_IGNORE_DISCARD)) {
        return 0; /* discard is advisory */
    }
    BdrvTrackedRequest req;
    BdrvTrackedRequest *preq = tracks_requests(bs) ? &req : NULL;
    request_begin(bs, preq, offset, bytes, false);
    ret = bs->drv->pdiscard(bs, offset, bytes);
    request_end(bs, preq);
    return ret;
}

int bdrv_flush(BlockDriverState *bs)
{
    int ret = 0;

    if (!bs->drv) {
        return -ENOMEDIUM;
    }
    if (bs->read_only) {
        return 0;
    }
    request_begin(bs, NULL, 0, 0, false);
    bdrv_debug_event(bs->file, "flush_to_os");  /* QEMU's blkdebug events */
    if (bs->drv->flush) {
        ret = bs->drv->flush(bs);
    }
    bdrv_debug_event(bs->file, "flush_to_disk");
    if (ret == 0 && bs->file) {
        ret = bdrv_flush(bs->file);
    }
    request_end(bs, NULL);
    return ret;
}

/* Refusals of a resize the driver could do (QEMU's texts), the same
 * whether or not a preallocation mode is asked for. */
static int check_truncate(BlockDriverState *bs, int64_t size, GError **errp)
{
    if (bs->read_only) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Image is read-only");
        return -EACCES;
    }
    if (size < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Image size cannot be negative");
        return -EINVAL;
    }
    return 0;
}

int bdrv_truncate(BlockDriverState *bs, int64_t size, GError **errp)
{
    int ret;

    if (!bs->drv || !bs->drv->truncate) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "Image format driver does not support resize");
        return -ENOTSUP;
    }
    ret = check_truncate(bs, size, errp);
    if (ret < 0) {
        return ret;
    }
    bdrv_drained_begin(bs);
    ret = bs->drv->truncate(bs, size, errp);
    bdrv_drained_end(bs);
    return ret;
}

static const char *const prealloc_names[] = {
    [BDRV_PREALLOC_OFF] = "off",
    [BDRV_PREALLOC_METADATA] = "metadata",
    [BDRV_PREALLOC_FALLOC] = "falloc",
    [BDRV_PREALLOC_FULL] = "full",
};

int bdrv_prealloc_parse(const char *name)
{
    for (int i = 0; i < (int)G_N_ELEMENTS(prealloc_names); i++) {
        if (name && !strcmp(name, prealloc_names[i])) {
            return i;
        }
    }
    return -1;
}

const char *bdrv_prealloc_name(BdrvPreallocMode mode)
{
    return (unsigned)mode < G_N_ELEMENTS(prealloc_names) ?
           prealloc_names[mode] : "?";
}

/*
 * QEMU hides a longer backing file's data behind a grown area: the new
 * bytes are zeroed, as they would be without a backing file.
 */
static int truncate_mask_backing(BlockDriverState *bs, int64_t old_size,
                                 int64_t size, GError **errp)
{
    int64_t backing_len;
    int ret;

    if (size <= old_size || !bs->backing) {
        return 0;
    }
    backing_len = bdrv_getlength(bs->backing);
    if (backing_len < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not get backing file size: %s",
                    g_strerror((int)-backing_len));
        return (int)backing_len;
    }
    if (backing_len <= old_size) {
        return 0;
    }
    ret = bdrv_pwrite_zeroes(bs, old_size, size - old_size, 0);
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Failed to zero out new clusters: %s", g_strerror(-ret));
    }
    return ret;
}

int bdrv_truncate_prealloc(BlockDriverState *bs, int64_t size,
                           BdrvPreallocMode prealloc, GError **errp)
{
    int64_t old_size;
    int ret;

    if (!bs->drv || !bs->drv->truncate_prealloc) {
        if (prealloc != BDRV_PREALLOC_OFF && bs->drv && bs->drv->truncate) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                        "Unsupported preallocation mode '%s'",
                        bdrv_prealloc_name(prealloc));
            return -ENOTSUP;
        }
        old_size = bdrv_getlength(bs);
        ret = bdrv_truncate(bs, size, errp);
        return ret < 0 ? ret : truncate_mask_backing(bs, old_size, size, errp);
    }
    ret = check_truncate(bs, size, errp);
    if (ret < 0) {
        return ret;
    }
    old_size = bdrv_getlength(bs);
    bdrv_drained_begin(bs);
    ret = bs->drv->truncate_prealloc(bs, size, prealloc, errp);
    bdrv_drained_end(bs);
    return ret < 0 ? ret : truncate_mask_backing(bs, old_size, size, errp);
}

bool bdrv_supports_amend(BlockDriverState *bs)
{
    return bs->drv && bs->drv->amend;
}

int bdrv_amend(BlockDriverState *bs, BlockOpts *opts, bool force,
               BdrvAmendStatusCB *status_cb, void *cb_opaque,
               GError **errp)
{
    int ret;

    if (!bdrv_supports_amend(bs)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "Format driver '%s' does not support option amendment",
                    bs->drv ? bs->drv->format_name : "?");
        return -ENOTSUP;
    }
    if (bs->read_only) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Image is read-only");
        return -EACCES;
    }
    bdrv_drained_begin(bs);
    ret = bs->drv->amend(bs, opts, force, status_cb, cb_opaque, errp);
    bdrv_drained_end(bs);
    return ret;
}

int bdrv_block_status(BlockDriverState *bs, int64_t offset, int64_t bytes,
                      int64_t *pnum, int64_t *map, BlockDriverState **file)
{
    int64_t len = bdrv_getlength(bs);
    int ret;

    *pnum = 0;
    if (map) {
        *map = 0;
    }
    if (file) {
        *file = NULL;
    }
    if (len < 0) {
        return (int)len;
    }
    if (offset >= len || bytes <= 0) {
        return 0;
    }
    bytes = MIN(bytes, len - offset);
    if (!bs->drv->block_status) {
        *pnum = bytes;
        return BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED;
    }
    int64_t m = 0;
    BlockDriverState *f = NULL;
    request_begin(bs, NULL, offset, bytes, false);
    ret = bs->drv->block_status(bs, offset, bytes, pnum, &m, &f);
    request_end(bs, NULL);
    if (ret >= 0 && *pnum == 0) {
        /* Nothing to say inside our length: we are past the end of the
         * child (a raw file whose size is not a whole number of sectors
         * is read as whole sectors), and that tail reads as zeroes. */
        *pnum = bytes;
        ret = BDRV_BLOCK_ZERO | BDRV_BLOCK_ALLOCATED;
        m = 0;
        f = NULL;
    }
    if (ret >= 0 && *pnum > bytes) {
        *pnum = bytes;
    }
    if (map) {
        *map = m;
    }
    if (file) {
        *file = f;
    }
    return ret;
}

int bdrv_block_status_above(BlockDriverState *bs, int64_t offset,
                            int64_t bytes, int64_t *pnum, int64_t *map,
                            BlockDriverState **file, int *depth)
{
    int d = 0;
    int ret;

    for (;;) {
        BlockDriverState *below;
        int64_t len;
        ret = bdrv_block_status(bs, offset, bytes, pnum, map, file);
        if (ret < 0 || (ret & BDRV_BLOCK_ALLOCATED) || *pnum == 0) {
            break;
        }
        bytes = *pnum;
        below = bdrv_backing_below(bs);
        if (!below) {
            ret |= BDRV_BLOCK_ZERO;
            break;
        }
        len = bdrv_getlength(below);
        if (len < 0) {
            ret = (int)len;
            break;
        }
        if (offset >= len) {
            /* past the end of a shorter backing file: zeroes */
            ret |= BDRV_BLOCK_ZERO;
            break;
        }
        bytes = MIN(bytes, len - offset);
        bs = below;
        d++;
    }
    if (depth) {
        *depth = d;
    }
    return ret;
}
