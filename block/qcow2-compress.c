/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 compressed clusters: the two codecs of the format (zlib as raw
 * deflate with a 4 KiB window, zstd as frames), compressed writes, the
 * byte allocator that packs compressed clusters into shared host clusters,
 * and the compression_type create option.
 *
 * Format facts (QEMU's docs/interop/qcow2.txt): a compressed L2 entry holds
 * the byte offset of the data and the number of 512-byte sectors it spans
 * after the first one; a host cluster holds one reference for every
 * compressed cluster whose data touches it.  A compressed cluster is never
 * written in place: like QEMU 7.2 we refuse (-EIO) to compress into a guest
 * cluster that already has a host cluster, and write data that does not
 * shrink as an ordinary cluster instead.
 *
 * Compressing is the slow part, so the clusters of one request are
 * compressed by a small pool of threads before the qcow2 lock is taken;
 * their data is then written with as few writes as the packing allows.
 */
#include <errno.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "qcow2.h"

#define COMPRESSED_SECTOR 512
#define MAX_COMPRESS_THREADS 4   /* QEMU's qcow2 uses four as well */

/* ---- Codecs --------------------------------------------------------- */

/* Each thread keeps its codec state: a reset is far cheaper than a new
 * context per cluster. */
static void free_deflater(gpointer p)
{
    z_stream *zs = p;

    deflateEnd(zs);
    g_free(zs);
}

static void free_zstd_cctx(gpointer p)
{
    ZSTD_freeCCtx(p);
}

static GPrivate deflater_key = G_PRIVATE_INIT(free_deflater);
static GPrivate zstd_cctx_key = G_PRIVATE_INIT(free_zstd_cctx);

static z_stream *thread_deflater(void)
{
    z_stream *zs = g_private_get(&deflater_key);

    if (zs) {
        return deflateReset(zs) == Z_OK ? zs : NULL;
    }
    zs = g_new0(z_stream, 1);
    /* QEMU's parameters: default level, raw deflate (no zlib header) with
     * a 4 KiB window, memLevel 9. */
    if (deflateInit2(zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9,
                     Z_DEFAULT_STRATEGY) != Z_OK) {
        g_free(zs);
        return NULL;
    }
    g_private_set(&deflater_key, zs);
    return zs;
}

static ssize_t zlib_compress(void *dst, size_t dst_size, const void *src,
                             size_t src_size)
{
    z_stream *zs = thread_deflater();
    int zret;

    if (!zs) {
        return -EIO;
    }
    zs->next_in = (Bytef *)src;
    zs->avail_in = src_size;
    zs->next_out = dst;
    zs->avail_out = dst_size;
    zret = deflate(zs, Z_FINISH);
    if (zret == Z_STREAM_END) {
        return (ssize_t)(dst_size - zs->avail_out);
    }
    /* Z_OK / Z_BUF_ERROR: the output did not fit */
    return zret == Z_OK || zret == Z_BUF_ERROR ? -ENOMEM : -EIO;
}

static int zlib_decompress(void *dst, size_t dst_size, const void *src,
                           size_t src_size)
{
    z_stream zs = { 0 };
    int zret, ret;

    if (inflateInit2(&zs, -12) != Z_OK) {
        return -EIO;
    }
    zs.next_in = (Bytef *)src;
    zs.avail_in = src_size;
    zs.next_out = dst;
    zs.avail_out = dst_size;
    zret = inflate(&zs, Z_FINISH);
    /* The stored size is rounded up to sectors, so the input may hold
     * bytes after the stream: a full output is what counts. */
    ret = (zret == Z_STREAM_END || zret == Z_BUF_ERROR) && zs.avail_out == 0
          ? 0 : -EIO;
    inflateEnd(&zs);
    return ret;
}

static ssize_t zstd_compress(void *dst, size_t dst_size, const void *src,
                             size_t src_size)
{
    ZSTD_CCtx *cctx = g_private_get(&zstd_cctx_key);
    ZSTD_outBuffer out = { dst, dst_size, 0 };
    ZSTD_inBuffer in = { src, src_size, 0 };
    size_t zret;

    if (!cctx) {
        cctx = ZSTD_createCCtx();
        if (!cctx) {
            return -EIO;
        }
        g_private_set(&zstd_cctx_key, cctx);
    }
    /* A failed frame leaves the context mid-stream; parameters stay the
     * defaults, as with a new context. */
    ZSTD_CCtx_reset(cctx, ZSTD_reset_session_only);
    /* One call with the whole input: either the frame is complete (0) or
     * the output was too small (a remaining size, or dstSize_tooSmall). */
    zret = ZSTD_compressStream2(cctx, &out, &in, ZSTD_e_end);
    if (ZSTD_isError(zret)) {
        return ZSTD_getErrorCode(zret) == ZSTD_error_dstSize_tooSmall ?
               -ENOMEM : -EIO;
    }
    if (zret != 0) {
        return -ENOMEM;
    }
    return (ssize_t)out.pos;
}

static int zstd_decompress(void *dst, size_t dst_size, const void *src,
                           size_t src_size)
{
    ZSTD_DCtx *dctx = ZSTD_createDCtx();
    ZSTD_outBuffer out = { dst, dst_size, 0 };
    ZSTD_inBuffer in = { src, src_size, 0 };
    size_t zret = 0;
    int ret = 0;

    if (!dctx) {
        return -EIO;
    }
    /* A cluster may be several frames; the input may end in padding. */
    while (out.pos < out.size) {
        size_t in_before = in.pos, out_before = out.pos;

        zret = ZSTD_decompressStream(dctx, &out, &in);
        if (ZSTD_isError(zret) ||
            (in.pos == in_before && out.pos == out_before)) {
            ret = -EIO;   /* damaged, or stuck without input */
            break;
        }
    }
    /* A frame still open holds more than a cluster: damaged. */
    if (ret == 0 && zret != 0) {
        ret = -EIO;
    }
    ZSTD_freeDCtx(dctx);
    return ret;
}

ssize_t qcow2_compress(uint8_t type, void *dst, size_t dst_size,
                       const void *src, size_t src_size)
{
    switch (type) {
    case QCOW2_COMPRESSION_ZLIB:
        return zlib_compress(dst, dst_size, src, src_size);
    case QCOW2_COMPRESSION_ZSTD:
        return zstd_compress(dst, dst_size, src, src_size);
    default:
        return -EIO;
    }
}

int qcow2_decompress(uint8_t type, void *dst, size_t dst_size,
                     const void *src, size_t src_size)
{
    switch (type) {
    case QCOW2_COMPRESSION_ZLIB:
        return zlib_decompress(dst, dst_size, src, src_size);
    case QCOW2_COMPRESSION_ZSTD:
        return zstd_decompress(dst, dst_size, src, src_size);
    default:
        return -EIO;
    }
}

int qcow2_parse_compression_type(const char *value, int version,
                                 GError **errp)
{
    int type;

    if (!value || !strcmp(value, "zlib")) {
        return QCOW2_COMPRESSION_ZLIB;
    }
    if (!strcmp(value, "zstd")) {
        type = QCOW2_COMPRESSION_ZSTD;
    } else {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Parameter 'compression-type' does not accept value "
                    "'%s'", value);
        return -1;
    }
    if (version < 3) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Non-zlib compression type is only supported with "
                    "compatibility level 1.1 and above (use version=v3 or "
                    "greater)");
        return -1;
    }
    return type;
}

/* ---- Parallel compression of the clusters of one request ------------ */

typedef struct CompressBatch {
    GMutex lock;
    GCond done;
    int finished;
} CompressBatch;

typedef struct CompressJob {
    const uint8_t *src;      /* one whole cluster */
    uint8_t *dst;            /* cluster_size - 1 bytes: must shrink */
    size_t cluster_size;
    uint8_t type;
    ssize_t len;             /* compressed size, or -ENOMEM / -EIO */
    CompressBatch *batch;
} CompressJob;

static void compress_job(CompressJob *j)
{
    j->len = qcow2_compress(j->type, j->dst, j->cluster_size - 1, j->src,
                            j->cluster_size);
}

static void pool_func(gpointer data, gpointer user_data)
{
    CompressJob *j = data;
    CompressBatch *b = j->batch;

    (void)user_data;
    compress_job(j);
    g_mutex_lock(&b->lock);
    b->finished++;
    g_cond_signal(&b->done);
    g_mutex_unlock(&b->lock);
}

/* One pool for the process: requests of every image share its threads. */
static GThreadPool *compress_pool(void)
{
    static gsize once;
    static GThreadPool *pool;

    if (g_once_init_enter(&once)) {
        int n = CLAMP((int)g_get_num_processors(), 1, MAX_COMPRESS_THREADS);
        pool = g_thread_pool_new(pool_func, NULL, n, FALSE, NULL);
        g_once_init_leave(&once, 1);
    }
    return pool;
}

/*
 * Compresses every job in the pool, with no more jobs queued than the
 * pool has threads: a thread then takes each cluster as it wakes up,
 * as QEMU's workers do.  Measured on a loaded machine, this matters:
 * threads that wake up for every cluster keep their share of the CPU,
 * while threads that run through a queue of clusters lose it to
 * everything else, and the copy takes several times as long.
 */
static void compress_all(CompressJob *jobs, int n)
{
    GThreadPool *pool;
    CompressBatch b;
    int pushed = 0, window;

    if (n == 1) {
        compress_job(&jobs[0]);
        return;
    }
    pool = compress_pool();
    window = MAX(1, g_thread_pool_get_max_threads(pool));
    g_mutex_init(&b.lock);
    g_cond_init(&b.done);
    b.finished = 0;
    g_mutex_lock(&b.lock);
    while (b.finished < n) {
        while (pushed < n && pushed - b.finished < window) {
            jobs[pushed].batch = &b;
            g_thread_pool_push(pool, &jobs[pushed++], NULL);
        }
        g_cond_wait(&b.done, &b.lock);
    }
    g_mutex_unlock(&b.lock);
    g_mutex_clear(&b.lock);
    g_cond_clear(&b.done);
}

/* ---- Allocation ----------------------------------------------------- */

/*
 * size bytes of host space for compressed data, under s->lock: after the
 * previous compressed cluster if it fits (or if the next host cluster is
 * the one allocated anyway), else at the start of a new host cluster.
 * Every host cluster touched gains one reference.
 */
static int64_t alloc_bytes(BlockDriverState *bs, uint64_t size)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t cs = s->cluster_size;
    uint64_t off = s->free_byte_offset;
    uint64_t rc = 0;
    int64_t fresh;
    int ret;

    bdrv_debug_event(bs->file, "cluster_alloc_bytes");
    if (off) {
        ret = qcow2_get_refcount(bs, off >> s->cluster_bits, &rc);
        if (ret < 0) {
            return ret;
        }
        if (rc == 0 || rc >= s->refcount_max) {
            off = 0;   /* freed meanwhile, or no reference left to give */
        }
    }
    if (off && cs - (off & (cs - 1)) >= size) {
        ret = qcow2_update_cluster_refcount(bs, off >> s->cluster_bits, 1,
                                            NULL);
        if (ret < 0) {
            return ret;
        }
    } else {
        fresh = qcow2_alloc_clusters_for(bs, 1, "compressed cluster");
        if (fresh < 0) {
            return fresh;
        }
        if (off && (uint64_t)fresh == qcow2_align_up(off, cs)) {
            /* contiguous: the data runs from the old cluster into it */
            ret = qcow2_update_cluster_refcount(bs, off >> s->cluster_bits,
                                                1, NULL);
            if (ret < 0) {
                qcow2_free_cluster_deferred(bs, fresh);
                return ret;
            }
        } else {
            off = fresh;
        }
    }
    if ((off + size) > s->coffset_mask) {
        /* the descriptor cannot hold the offset (over 2^49 bytes and up) */
        qcow2_update_refcount_range(bs, off, size, -1);
        return -EFBIG;
    }
    s->free_byte_offset = ((off + size) & (cs - 1)) ? off + size : 0;
    return (int64_t)off;
}

/* Gives back what alloc_bytes counted (nothing points at it yet). */
static void free_bytes(BlockDriverState *bs, uint64_t off, uint64_t size)
{
    BDRVQcow2State *s = bs->opaque;

    for (uint64_t c = qcow2_cluster_start(s, off); c < off + size;
         c += s->cluster_size) {
        qcow2_free_cluster_deferred(bs, c);
    }
}

static uint64_t compressed_entry(BDRVQcow2State *s, uint64_t off,
                                 uint64_t len)
{
    uint64_t nb_sectors = (off + len - 1) / COMPRESSED_SECTOR -
                          off / COMPRESSED_SECTOR;

    return off | QCOW_OFLAG_COMPRESSED | (nb_sectors << s->csize_shift);
}

/* ---- The compressed write ------------------------------------------- */

typedef struct CompressedWrite {
    BlockDriverState *bs;
    uint64_t offset;          /* guest, cluster aligned */
    int n;                    /* clusters */
    CompressJob *jobs;
    uint64_t *host;           /* per cluster: host offset, 0 if none */
} CompressedWrite;

/* A guest cluster that maps to host space cannot take compressed data. */
static bool entry_takes_compressed(uint64_t e)
{
    return !(e & L2E_OFFSET_MASK) &&
           qcow2_get_cluster_type(e) != QCOW2_CLUSTER_COMPRESSED;
}

/* Under s->lock: the entry of cluster i, in a table of the active image
 * alone if for_write; -EIO if it cannot take compressed data. */
static int check_target(CompressedWrite *w, int i, bool for_write)
{
    BDRVQcow2State *s = w->bs->opaque;
    uint64_t e;
    int ret = qcow2_l2_entry_get(w->bs, w->offset +
                                 ((uint64_t)i << s->cluster_bits),
                                 for_write, &e, NULL);

    if (ret == 0 && !entry_takes_compressed(e)) {
        ret = -EIO;
    }
    return ret;
}

/* Under s->lock: checks every target cluster (a refusal changes nothing),
 * then allocates host bytes for each; on error nothing is left
 * allocated. */
static int reserve_space(CompressedWrite *w)
{
    BlockDriverState *bs = w->bs;
    int ret = 0;

    for (int i = 0; i < w->n && ret == 0; i++) {
        if (w->jobs[i].len >= 0) {
            ret = check_target(w, i, false);
        }
    }
    for (int i = 0; i < w->n && ret == 0; i++) {
        int64_t off;
        if (w->jobs[i].len < 0) {
            continue;
        }
        /* Each L2 table before the data it maps, as QEMU lays them out. */
        ret = check_target(w, i, true);
        if (ret < 0) {
            break;
        }
        off = alloc_bytes(bs, w->jobs[i].len);
        if (off < 0) {
            ret = (int)off;
            break;
        }
        w->host[i] = off;
        ret = qcow2_overlap_check(bs, 0, off, w->jobs[i].len);
    }
    if (ret < 0) {
        for (int i = 0; i < w->n; i++) {
            if (w->host[i]) {
                free_bytes(bs, w->host[i], w->jobs[i].len);
                w->host[i] = 0;
            }
        }
    }
    return ret;
}

/* Writes the compressed data, one write per run of adjacent pieces. */
static int write_compressed_data(CompressedWrite *w)
{
    BlockDriverState *bs = w->bs;
    size_t total = 0;
    g_autofree uint8_t *run = NULL;

    for (int i = 0; i < w->n; i++) {
        if (w->host[i]) {
            total += w->jobs[i].len;
        }
    }
    run = g_malloc(MAX(total, 1));
    for (int i = 0; i < w->n;) {
        uint64_t start;
        size_t len = 0;
        int ret;

        if (!w->host[i]) {
            i++;
            continue;
        }
        start = w->host[i];
        do {
            memcpy(run + len, w->jobs[i].dst, w->jobs[i].len);
            len += w->jobs[i].len;
            i++;
            while (i < w->n && !w->host[i]) {
                i++;   /* a cluster written uncompressed in between */
            }
        } while (i < w->n && w->host[i] == start + len);
        ret = bdrv_pwrite(bs->file, start, len, run);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

/* Under s->lock: the guest clusters point at their compressed data. */
static int publish(CompressedWrite *w)
{
    BlockDriverState *bs = w->bs;
    BDRVQcow2State *s = bs->opaque;

    for (int i = 0; i < w->n; i++) {
        int ret;
        if (!w->host[i]) {
            continue;
        }
        ret = qcow2_l2_entry_set(bs, w->offset +
                                 ((uint64_t)i << s->cluster_bits),
                                 compressed_entry(s, w->host[i],
                                                  w->jobs[i].len), 0);
        if (ret < 0) {
            return ret;   /* the entries not set only leak their space */
        }
        w->host[i] = 0;
    }
    return 0;
}

/* The clusters that compressed, stored: space reserved under the lock,
 * data written outside it (the guest range marked in flight), entries
 * set under the lock again. */
static int store_compressed(CompressedWrite *w)
{
    BlockDriverState *bs = w->bs;
    BDRVQcow2State *s = bs->opaque;
    uint64_t end = w->offset + ((uint64_t)w->n << s->cluster_bits);
    Qcow2InflightAlloc me = { w->offset, end, NULL };
    int ret;

    g_rw_lock_reader_lock(&s->free_lock);
    g_mutex_lock(&s->lock);
    while (qcow2_inflight_overlaps(s, w->offset, end)) {
        qcow2_inflight_wait(s);
    }
    ret = reserve_space(w);
    if (ret < 0) {
        goto out;
    }
    me.next = s->inflight;
    s->inflight = &me;
    g_mutex_unlock(&s->lock);

    bdrv_debug_event(bs->file, "write_compressed");
    ret = write_compressed_data(w);

    g_mutex_lock(&s->lock);
    if (ret == 0) {
        bdrv_debug_event(bs->file, "l2_update_compressed");
        ret = publish(w);
    }
    for (int i = 0; i < w->n; i++) {
        if (w->host[i]) {
            free_bytes(bs, w->host[i], w->jobs[i].len);
        }
    }
    qcow2_inflight_remove(s, &me);
out:
    g_mutex_unlock(&s->lock);
    g_rw_lock_reader_unlock(&s->free_lock);
    return ret;
}

/* Pads the image file to a whole sector, as QEMU does at the end of a
 * compressed copy: compressed data is packed byte by byte. */
static int align_file_end(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    static const uint8_t zeroes[COMPRESSED_SECTOR];
    int64_t len;
    int ret;

    /* With no data request in flight, nothing extends the file under us. */
    g_rw_lock_writer_lock(&s->free_lock);
    len = bdrv_getlength(bs->file);
    ret = len < 0 ? (int)len : 0;
    if (ret == 0 && len % COMPRESSED_SECTOR) {
        ret = bdrv_pwrite(bs->file, len,
                          COMPRESSED_SECTOR - len % COMPRESSED_SECTOR,
                          zeroes);
    }
    g_rw_lock_writer_unlock(&s->free_lock);
    return ret;
}

/* The most compressed at once: bounds the memory a request takes. */
#define BATCH_BYTES (4 * 1024 * 1024)

static int write_batch(BlockDriverState *bs, uint64_t offset, uint64_t bytes,
                       const uint8_t *buf)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t cs = s->cluster_size;
    int n = (int)((bytes + cs - 1) / cs);
    g_autofree CompressJob *jobs = g_new0(CompressJob, n);
    g_autofree uint64_t *host = g_new0(uint64_t, n);
    g_autofree uint8_t *out = g_malloc((size_t)n * (cs - 1));
    g_autofree uint8_t *tail = NULL;
    CompressedWrite w = { bs, offset, n, jobs, host };
    int ret;

    for (int i = 0; i < n; i++) {
        jobs[i].src = buf + (uint64_t)i * cs;
        jobs[i].dst = out + (uint64_t)i * (cs - 1);
        jobs[i].cluster_size = cs;
        jobs[i].type = s->compression_type;
    }
    if (bytes % cs) {
        /* the image ends inside this cluster: compress it zero-padded */
        tail = g_malloc0(cs);
        memcpy(tail, buf + (uint64_t)(n - 1) * cs, bytes % cs);
        jobs[n - 1].src = tail;
    }
    compress_all(jobs, n);
    for (int i = 0; i < n; i++) {
        if (jobs[i].len < 0 && jobs[i].len != -ENOMEM) {
            return -EINVAL;   /* as QEMU: a codec failure is EINVAL */
        }
    }
    /* What does not shrink is written as an ordinary cluster. */
    for (int i = 0; i < n; i++) {
        if (jobs[i].len == -ENOMEM) {
            uint64_t at = (uint64_t)i * cs;
            ret = qcow2_pwrite(bs, offset + at, MIN(cs, bytes - at), buf + at);
            if (ret < 0) {
                return ret;
            }
        }
    }
    return store_compressed(&w);
}

int qcow2_pwrite_compressed(BlockDriverState *bs, int64_t offset,
                            int64_t bytes, const void *buf)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t cs = s->cluster_size;
    const uint8_t *p = buf;

    /* A data file holds guest clusters at their guest offsets only:
     * there is no place for compressed data (QEMU: ENOTSUP too). */
    if (qcow2_has_data_file(s)) {
        return -ENOTSUP;
    }
    /* Compressed clusters are stored as they are: in an encrypted image
     * that would leave guest data in the clear. */
    if (s->crypt_method) {
        return -ENOTSUP;
    }
    if (bytes == 0) {
        return align_file_end(bs);
    }
    if (offset % cs) {
        return -EINVAL;
    }
    if (bytes % cs && (uint64_t)offset + bytes != s->size) {
        return -EINVAL;
    }
    if ((uint64_t)offset + bytes > s->size) {
        return -EIO;
    }
    while (bytes > 0) {
        uint64_t n = MIN((uint64_t)bytes, MAX(BATCH_BYTES, 4 * cs));
        int ret = write_batch(bs, offset, n, p);
        if (ret < 0) {
            return ret;
        }
        offset += n;
        bytes -= n;
        p += n;
    }
    return 0;
}
