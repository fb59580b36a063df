/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Creating qcow2 images.  We write the smallest valid image (header,
 * refcount table, one refcount block), then open it with our own driver
 * and grow it to the requested size, so the layout comes from the same
 * allocator every later write uses (and matches qemu-img's: header,
 * refcount table, refcount block, L1 table).
 */
#include <errno.h>
#include <string.h>

#include "qcow2.h"
#include "block/drivers.h"
#include "block/filename.h"

typedef struct Qcow2CreateOpts {
    uint64_t size;
    uint32_t cluster_size;
    int refcount_bits;
    int version;
    const char *backing_file;
    const char *backing_fmt;
    bool prealloc_metadata;
    int compression_type;
    bool prealloc_data;        /* falloc or full: the file's clusters too */
    bool prealloc_full;        /* full: written with zeroes */
    bool lazy_refcounts;
    bool extl2;                /* extended L2 entries (incompatible bit 4) */
    const char *data_file;     /* external data file to create, or NULL */
    bool data_file_raw;
    Qcow2CryptoCreate crypt;   /* method 0: not encrypted */
} Qcow2CreateOpts;

/*
 * Encryption: encryption=on (QEMU's old spelling of encrypt.format=aes)
 * or encrypt.format=aes|luks, with encrypt.key-secret and, for LUKS, the
 * cipher, hash and PBKDF2 time.
 */
static bool parse_encrypt_opts(BlockOpts *opts, Qcow2CreateOpts *o,
                               GError **errp)
{
    const char *fmt = bdrv_opts_get(opts, "encrypt.format");
    bool old = false;
    uint64_t iter_time = 0;

    if (!bdrv_opts_get_bool(opts, "encryption", false, &old, errp) ||
        !bdrv_opts_get_size(opts, "encrypt.iter-time", 0, &iter_time,
                            errp)) {
        return false;
    }
    if (old && fmt) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Conflicting parameters 'encryption' and "
                    "'encrypt.format'");
        return false;
    }
    if (old || (fmt && !strcmp(fmt, "aes"))) {
        o->crypt.method = QCOW2_CRYPT_AES;
    } else if (fmt && !strcmp(fmt, "luks")) {
        o->crypt.method = QCOW2_CRYPT_LUKS;
    } else if (fmt) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Parameter 'encrypt.format' does not accept value '%s'",
                    fmt);
        return false;
    } else {
        return true;
    }
    o->crypt.key_secret = bdrv_opts_get(opts, "encrypt.key-secret");
    o->crypt.luks.cipher_alg = bdrv_opts_get(opts, "encrypt.cipher-alg");
    o->crypt.luks.cipher_mode = bdrv_opts_get(opts, "encrypt.cipher-mode");
    o->crypt.luks.ivgen_alg = bdrv_opts_get(opts, "encrypt.ivgen-alg");
    o->crypt.luks.ivgen_hash_alg = bdrv_opts_get(opts,
                                                 "encrypt.ivgen-hash-alg");
    o->crypt.luks.hash_alg = bdrv_opts_get(opts, "encrypt.hash-alg");
    o->crypt.luks.iter_time_ms = (int64_t)MIN(iter_time, INT64_MAX);
    return true;
}

/* lazy_refcounts=on needs the compatible feature bits of version 3. */
static bool check_lazy_refcounts(const Qcow2CreateOpts *o, GError **errp)
{
    if (o->lazy_refcounts && o->version < 3) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Lazy refcounts only supported with compatibility level "
                    "1.1 and above (use version=v3 or greater)");
        return false;
    }
    return true;
}

/* preallocation: off, metadata, falloc, full (QEMU's text otherwise). */
static bool parse_prealloc(const char *prealloc, Qcow2CreateOpts *o,
                           GError **errp)
{
    if (!prealloc || !strcmp(prealloc, "off")) {
        return true;
    }
    if (strcmp(prealloc, "metadata") && strcmp(prealloc, "falloc") &&
        strcmp(prealloc, "full")) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Parameter 'preallocation' does not accept value '%s'",
                    prealloc);
        return false;
    }
    o->prealloc_metadata = true;
    o->prealloc_data = strcmp(prealloc, "metadata") != 0;
    o->prealloc_full = !strcmp(prealloc, "full");
    return true;
}

/* data_file / data_file_raw, with QEMU's checks in QEMU's order
 * (after the backing file and preallocation are known). */
static bool check_data_file(BlockOpts *opts, Qcow2CreateOpts *o,
                            GError **errp)
{
    if (!bdrv_opts_get_bool(opts, "data_file_raw", false, &o->data_file_raw,
                            errp)) {
        return false;
    }
    o->data_file = bdrv_opts_get(opts, "data_file");
    if (o->data_file_raw && !o->data_file) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "data-file-raw requires data-file");
        return false;
    }
    if (o->data_file_raw && o->backing_file) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Backing file and data-file-raw cannot be used at the "
                    "same time");
        return false;
    }
    /* A raw data file must read as the disk does: the L2 tables map
     * every cluster one to one from the start. */
    if (o->data_file_raw && !o->prealloc_metadata) {
        o->prealloc_metadata = true;
    }
    if (o->data_file && o->version < 3) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "External data files are only supported with "
                    "compatibility level 1.1 and above (use version=v3 or "
                    "greater)");
        return false;
    }
    return true;
}

/* compat (and preallocation): QEMU parses these values with the others
 * before it judges any, so a bad value is reported first. */
static bool parse_compat(const char *compat, Qcow2CreateOpts *o, GError **errp)
{
    if (!compat || !strcmp(compat, "1.1") || !strcmp(compat, "v3")) {
        o->version = 3;
    } else if (!strcmp(compat, "0.10") || !strcmp(compat, "v2")) {
        o->version = 2;
    } else {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Parameter 'version' does not accept value '%s'", compat);
        return false;
    }
    return true;
}

/*
 * Extended L2 entries split a cluster into 32 subclusters of at least a
 * sector each, and only version 3 has incompatible feature bits: QEMU
 * checks the version first, then the cluster size (its own rule for any
 * image, then the minimum for subclusters).
 */
static bool check_cluster_size(uint64_t cs, const Qcow2CreateOpts *o,
                               GError **errp)
{
    uint64_t min_extl2 = (1ULL << QCOW2_MIN_CLUSTER_BITS) * QCOW2_SUBCLUSTERS;

    if (o->extl2 && o->version < 3) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Extended L2 entries are only supported with "
                    "compatibility level 1.1 and above (use version=v3 or "
                    "greater)");
        return false;
    }
    if (cs < 512 || cs > 2 * 1024 * 1024 || (cs & (cs - 1))) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Cluster size must be a power of two between 512 and "
                    "2048k");
        return false;
    }
    if (o->extl2 && cs < min_extl2) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Extended L2 entries are only supported with cluster "
                    "sizes of at least %" G_GUINT64_FORMAT " bytes",
                    min_extl2);
        return false;
    }
    return true;
}

static bool parse_create_opts(BlockOpts *opts, Qcow2CreateOpts *o,
                              GError **errp)
{
    const char *compat = bdrv_opts_get(opts, "compat");
    const char *prealloc = bdrv_opts_get(opts, "preallocation");
    const char *ctype = bdrv_opts_get(opts, "compression_type");
    uint64_t cs, rb, l2_entries;

    if (!bdrv_opts_get_size(opts, "size", 0, &o->size, errp) ||
        !bdrv_opts_get_size(opts, "cluster_size", 65536, &cs, errp) ||
        !bdrv_opts_get_size(opts, "refcount_bits", 16, &rb, errp) ||
        !bdrv_opts_get_bool(opts, "lazy_refcounts", false,
                            &o->lazy_refcounts, errp) ||
        !bdrv_opts_get_bool(opts, "extended_l2", false, &o->extl2, errp) ||
        !parse_compat(compat, o, errp) ||
        !parse_prealloc(prealloc, o, errp) ||
        !check_cluster_size(cs, o, errp)) {
        return false;
    }
    o->cluster_size = cs;
    /* QEMU refuses lazy refcounts on version 2 before any refcount width */
    if (!check_lazy_refcounts(o, errp)) {
        return false;
    }
    if (rb < 1 || rb > 64 || (rb & (rb - 1))) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Refcount width must be a power of two and may not "
                    "exceed 64 bits");
        return false;
    }
    o->refcount_bits = rb;
    if (o->version == 2 && rb != 16) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Different refcount widths than 16 bits require "
                    "compatibility level 1.1 or above (use version=v3 or "
                    "greater)");
        return false;
    }
    o->compression_type = qcow2_parse_compression_type(ctype, o->version,
                                                       errp);
    if (o->compression_type < 0) {
        return false;
    }
    if (!parse_encrypt_opts(opts, o, errp)) {
        return false;
    }
    o->backing_file = bdrv_opts_get(opts, "backing_file");
    o->backing_fmt = bdrv_opts_get(opts, "backing_fmt");
    if (!check_data_file(opts, o, errp)) {
        return false;
    }
    if (o->backing_file && strlen(o->backing_file) > QCOW2_MAX_BACKING_NAME) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Backing file name too long");
        return false;
    }
    if (o->backing_fmt && strlen(o->backing_fmt) >= 16) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Unknown backing file format '%s'", o->backing_fmt);
        return false;
    }
    if (o->prealloc_metadata && o->backing_file && !o->extl2) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Backing file and preallocation can only be used at the "
                    "same time if extended_l2 is on");
        return false;
    }
    o->size = qcow2_align_up(o->size, BDRV_SECTOR_SIZE);
    /* Checked before anything is written; QEMU's generic text for a size
     * the format cannot address (its hint: qcow2 always has a cluster
     * size option).  Extended entries are 16 bytes: an L2 table maps
     * half as much. */
    l2_entries = cs / (o->extl2 ? 16 : 8);
    if (o->size &&
        (o->size - 1) / (cs * l2_entries) + 1 > QCOW2_MAX_L1_BYTES / 8) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "The image size is too large for file format 'qcow2' "
                    "(try using a larger cluster size)");
        return false;
    }
    return true;
}

/* Cluster 0: header; cluster 1: refcount table; cluster 2: refcount block
 * counting clusters 0-2.  Size 0 and no L1 table yet. */
static bool write_minimal_image(const char *filename, const Qcow2CreateOpts *o,
                                GError **errp)
{
    uint32_t cs = o->cluster_size;
    int order = __builtin_ctz(o->refcount_bits);
    g_autofree uint8_t *buf = g_malloc0(3 * (size_t)cs);
    g_autoptr(BlockDriverState) file = NULL;
    BDRVQcow2State tmp = { .refcount_order = order };
    int ret;

    uint32_t v32;
    uint64_t v64;
#define PUT32(off, v) (v32 = GUINT32_TO_BE(v), memcpy(buf + (off), &v32, 4))
#define PUT64(off, v) (v64 = GUINT64_TO_BE(v), memcpy(buf + (off), &v64, 8))
    PUT32(0, QCOW_MAGIC);
    PUT32(4, o->version);
    PUT32(20, __builtin_ctz(cs));
    PUT64(48, cs);          /* refcount table at cluster 1 */
    PUT32(56, 1);
    if (o->version >= 3) {
        /* the driver that grows the image then lays out 16-byte L2
         * entries from the first table on */
        PUT64(72, o->extl2 ? QCOW2_INCOMPAT_EXTL2 : 0);
        PUT64(80, o->lazy_refcounts ? QCOW2_COMPAT_LAZY_REFCOUNTS : 0);
        PUT32(96, order);
        PUT32(100, QCOW2_V3_HEADER_LENGTH);
    }
    PUT64(cs, 2 * (uint64_t)cs);   /* refcount block at cluster 2 */
#undef PUT32
#undef PUT64
    for (int i = 0; i < 3; i++) {
        qcow2_refblock_set(&tmp, buf + 2 * cs, i, 1);
    }
    if (!bdrv_create_target(filename, 0, errp)) {
        return false;
    }
    file = bdrv_create_target_open(filename, BDRV_O_RDWR | BDRV_O_NO_FLUSH,
                                   errp);
    if (!file) {
        return false;
    }
    ret = bdrv_pwrite(file, 0, 3 * (int64_t)cs, buf);
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not write qcow2 header: %s", g_strerror(-ret));
        return false;
    }
    return true;
}

/* The complete new image to stable storage, once (through the file
 * driver, so fault injection reaches it like any other flush). */
static int sync_file(const char *filename)
{
    BlockDriverState *file = bdrv_create_target_open(filename, BDRV_O_RDWR,
                                                     NULL);
    int ret;

    if (!file) {
        return -EIO;
    }
    ret = bdrv_flush(file);
    bdrv_unref(file);
    return ret;
}

/* falloc / full: the clusters that metadata preallocation mapped are
 * allocated in the file too (full: written with zeroes), from `start`
 * on: as QEMU, the holes in the clusters of the metadata written before
 * (the header's and L1 table's tails) stay holes, so the file has the
 * same extents as QEMU's and grows as little on later writes.  `end`:
 * where the image file must end (metadata preallocation left it short,
 * so that the space is reserved by growing the file: see
 * file_preallocate). */
static bool preallocate_data(BlockDriverState *bs, const Qcow2CreateOpts *o,
                             int64_t start, uint64_t end, GError **errp)
{
    /* With a data file the data lives there, and only there. */
    BDRVQcow2State *s = bs->opaque;
    BlockDriverState *target = qcow2_data(bs);
    int64_t len;
    int ret;

    /* the L2 tables land before the reserved range, as QEMU's */
    g_mutex_lock(&s->lock);
    ret = qcow2_write_back_metadata(bs);
    g_mutex_unlock(&s->lock);
    len = bdrv_getlength(target);
    /* whole clusters, as QEMU's falloc/full: metadata preallocation alone
     * may end the file inside the last one (at a subcluster's end) */
    if (len > 0 && !qcow2_has_data_file(s)) {
        len = (int64_t)qcow2_align_up(MAX((uint64_t)len, end),
                                      s->cluster_size);
    }
    ret = ret < 0 ? ret : len < 0 ? (int)len
                      : file_preallocate(target, qcow2_has_data_file(bs->opaque)
                                                 ? 0 : start,
                                         len, o->prealloc_full);

    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not preallocate data for the new file: %s",
                    g_strerror(-ret));
        return false;
    }
    return true;
}

/*
 * The data file is created (raw, of the disk's size, as QEMU's file
 * protocol creates it) and attached to the new image, whose header then
 * records its name as given.
 */
static bool attach_data_file(BlockDriverState *bs, const Qcow2CreateOpts *o,
                             GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    /* "file:X" is the file X, and the header records X (as QEMU, which
     * records the name of the node it made) */
    g_autofree char *path = bdrv_local_path(o->data_file);
    BlockOpts *fopts;

    if (!file_create_with_size(path, o->size, errp)) {
        return false;
    }
    fopts = bdrv_opts_new();
    bdrv_opts_set(fopts, "driver", file_protocol_for(path));
    s->data_file = bdrv_open(path, fopts,
                             BDRV_O_RDWR | BDRV_O_NO_FLUSH, errp);
    if (!s->data_file) {
        return false;
    }
    s->data_file_name = g_steal_pointer(&path);
    s->incompatible_features |= QCOW2_INCOMPAT_DATA_FILE;
    if (o->data_file_raw) {
        s->autoclear_features |= QCOW2_AUTOCLEAR_DATA_FILE_RAW;
    }
    return true;
}

/*
 * falloc and full reserve the data area in the file that holds it; a
 * device cannot grow, so QEMU fails them there after it has written the
 * image (leaving a header of size 0).  Refused here before anything is
 * written, with QEMU's text.
 */
static bool prealloc_target_ok(const char *filename, const Qcow2CreateOpts *o,
                               GError **errp)
{
    const char *target = o->data_file ? o->data_file : filename;

    if (o->prealloc_data && !bdrv_create_target_is_host_file(target)) {
        /* an export: QEMU's truncate cannot grow it (or, when it is long
         * enough already, reserves nothing) */
        bdrv_create_target_cannot_grow(target, errp);
        g_prefix_error(errp, "Could not resize image: Failed to resize "
                       "underlying file: ");
        return false;
    }
    if (o->prealloc_data && strcmp(file_protocol_for(target), "file")) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "Could not resize image: Failed to resize underlying "
                    "file: Preallocation mode '%s' unsupported for this "
                    "non-regular file", o->prealloc_full ? "full" : "falloc");
        return false;
    }
    return true;
}

bool qcow2_create(const char *filename, BlockOpts *opts, GError **errp)
{
    Qcow2CreateOpts o = { 0 };
    g_autoptr(BlockDriverState) bs = NULL;
    BDRVQcow2State *s;
    BlockOpts *oopts;
    int64_t data_start;
    uint64_t file_end = 0;
    int ret;

    if (!parse_create_opts(opts, &o, errp) ||
        !prealloc_target_ok(filename, &o, errp) ||
        !write_minimal_image(filename, &o, errp)) {
        return false;
    }
    oopts = bdrv_opts_new();
    bdrv_opts_set(oopts, "driver", "qcow2");
    /* No file is linked to the new image yet, so the order of its
     * writes does not matter until it is complete: one sync at the end
     * instead of one per metadata step (an external snapshot creates its
     * overlay while the guest is held). */
    bs = bdrv_open(filename, oopts,
                   BDRV_O_RDWR | BDRV_O_NO_BACKING | BDRV_O_NO_FLUSH, errp);
    if (!bs) {
        g_prefix_error(errp, "Could not open '%s' after creating it: ",
                       filename);
        return false;
    }
    s = bs->opaque;
    if (o.backing_file) {
        bs->backing_file = g_strdup(o.backing_file);
        bs->backing_format = g_strdup(o.backing_fmt);
    }
    if (o.compression_type != QCOW2_COMPRESSION_ZLIB) {
        s->compression_type = o.compression_type;
        s->incompatible_features |= QCOW2_INCOMPAT_COMPRESSION;
    }
    if (o.data_file && !attach_data_file(bs, &o, errp)) {
        return false;
    }
    if (qcow2_write_header(bs, errp) < 0) {
        return false;
    }
    if (o.size && qcow2_truncate(bs, o.size, errp) < 0) {
        return false;
    }
    /* QEMU's order: the LUKS header comes after the L1 table */
    if (o.crypt.method && qcow2_crypto_setup(bs, &o.crypt, errp) < 0) {
        return false;
    }
    /* where the data area begins: after the metadata written so far */
    data_start = bdrv_getlength(bs->file);
    data_start = data_start < 0 ? 0
                                : (int64_t)qcow2_align_up(data_start,
                                                          s->cluster_size);
    if (o.prealloc_metadata && o.size) {
        /* falloc/full reserve the space themselves, by growing the file
         * (see preallocate_data) */
        bool reserve = o.prealloc_data && !qcow2_has_data_file(s);
        g_mutex_lock(&s->lock);
        ret = qcow2_preallocate_metadata(bs, 0, o.size,
                                         reserve ? &file_end : NULL);
        g_mutex_unlock(&s->lock);
        if (ret < 0) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                        "Could not preallocate metadata: %s",
                        g_strerror(-ret));
            return false;
        }
    }
    if (o.prealloc_data && o.size &&
        !preallocate_data(bs, &o, data_start, file_end, errp)) {
        return false;
    }
    ret = bdrv_flush(bs);
    g_clear_pointer(&bs, bdrv_unref);   /* its lock goes with it */
    if (ret == 0) {
        ret = sync_file(filename);
    }
    if (ret == 0 && o.data_file) {
        ret = sync_file(o.data_file);
    }
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not flush the new image: %s", g_strerror(-ret));
        return false;
    }
    return true;
}
