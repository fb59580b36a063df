/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Encrypted qcow2 images (crypt_method 1: legacy AES-CBC; 2: LUKS), as
 * QEMU 7.2 keeps them.  Metadata is never encrypted; each 512-byte sector
 * of guest data is, with an IV from the sector's number: for LUKS the
 * number of its sector in the file (so a cluster that moves must be
 * re-encrypted, which every copy here does by going through plaintext),
 * for AES the number of its sector on the guest's disk.  The LUKS header
 * (key slots and all) lives in clusters the crypto header extension
 * points at.  Compressed clusters would not be encrypted, so compressed
 * writes are refused.
 *
 * An image opened only to be described (BDRV_O_NO_IO: info) is not
 * unlocked and reads no guest data.
 */
#include <errno.h>
#include <string.h>

#include "qcow2.h"
#include "block/crypto.h"
#include "block/drivers.h"

/* Data passes through a bounce buffer of at most this many bytes. */
#define CRYPTO_CHUNK (1024 * 1024)

bool qcow2_crypto_parse_ext(BlockDriverState *bs, const uint8_t *data,
                            uint32_t len, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;

    if (s->crypt_method != QCOW2_CRYPT_LUKS) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "CRYPTO header extension only expected with LUKS "
                    "encryption method");
        return false;
    }
    if (len != 16) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "CRYPTO header extension size %u, but expected size 16",
                    len);
        return false;
    }
    s->crypto_hdr_offset = GUINT64_FROM_BE(*(const uint64_t *)data);
    s->crypto_hdr_length = GUINT64_FROM_BE(*(const uint64_t *)(data + 8));
    if (s->crypto_hdr_offset % s->cluster_size) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Encryption header offset '%" G_GUINT64_FORMAT "' is "
                    "not a multiple of cluster size '%u'",
                    s->crypto_hdr_offset, s->cluster_size);
        return false;
    }
    s->has_crypto_hdr = true;
    return true;
}

bool qcow2_crypto_ext_bytes(BDRVQcow2State *s, uint8_t out[16])
{
    uint64_t v;

    if (!s->has_crypto_hdr) {
        return false;
    }
    v = GUINT64_TO_BE(s->crypto_hdr_offset);
    memcpy(out, &v, 8);
    v = GUINT64_TO_BE(s->crypto_hdr_length);
    memcpy(out + 8, &v, 8);
    return true;
}

/* The LUKS library reads and writes the header through these: only
 * inside the clusters the extension names. */
static bool hdr_range_ok(BDRVQcow2State *s, uint64_t offset, size_t len,
                         GError **errp)
{
    if (offset > s->crypto_hdr_length ||
        len > s->crypto_hdr_length - offset) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Request for data outside of extension header");
        return false;
    }
    return true;
}

static bool hdr_read(void *opaque, uint64_t offset, void *buf, size_t len,
                     GError **errp)
{
    BlockDriverState *bs = opaque;
    BDRVQcow2State *s = bs->opaque;

    return hdr_range_ok(s, offset, len, errp) &&
           luks_file_read(bs->file, s->crypto_hdr_offset + offset, buf, len,
                          errp);
}

static bool hdr_write(void *opaque, uint64_t offset, const void *buf,
                      size_t len, GError **errp)
{
    BlockDriverState *bs = opaque;
    BDRVQcow2State *s = bs->opaque;

    return hdr_range_ok(s, offset, len, errp) &&
           luks_file_write(bs->file, s->crypto_hdr_offset + offset, buf, len,
                           errp);
}

/* encrypt.format given at open must agree with the header (QEMU's texts) */
static bool check_format_option(BDRVQcow2State *s, const char *fmt,
                                GError **errp)
{
    static const char *const names[] = { NULL, "aes", "luks" };

    if (!fmt) {
        return true;
    }
    if (s->crypt_method == QCOW2_CRYPT_NONE) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "No encryption in image header, but options specified "
                    "format '%s'", fmt);
        return false;
    }
    if (strcmp(fmt, names[s->crypt_method])) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Header reported '%s' encryption format but options "
                    "specify '%s'", names[s->crypt_method], fmt);
        return false;
    }
    return true;
}

int qcow2_crypto_open(BlockDriverState *bs, BlockOpts *options, int flags,
                      GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    g_autofree char *fmt = bdrv_opts_take(options, "encrypt.format");
    g_autofree char *id = bdrv_opts_take(options, "encrypt.key-secret");
    g_autoptr(GBytes) secret = NULL;

    if (!check_format_option(s, fmt, errp)) {
        return -EINVAL;
    }
    s->key_secret_id = g_strdup(id);
    if (s->crypt_method == QCOW2_CRYPT_NONE) {
        return 0;
    }
    if (s->crypt_method == QCOW2_CRYPT_LUKS && !s->has_crypto_hdr &&
        !(flags & BDRV_O_NO_IO)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Missing CRYPTO header for crypt method %d",
                    s->crypt_method);
        return -EINVAL;
    }
    if (flags & BDRV_O_NO_IO) {
        return 0;   /* described, not unlocked */
    }
    if (!id) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Parameter 'encrypt.key-secret' is required for cipher");
        return -EINVAL;
    }
    secret = crypto_secret_lookup(id, errp);
    if (!secret) {
        return -EINVAL;
    }
    if (s->crypt_method == QCOW2_CRYPT_AES) {
        s->crypto = block_crypto_qcow_aes_new(secret, errp);
    } else {
        s->crypto = luks_open(secret, hdr_read, bs, errp);
    }
    if (!s->crypto) {
        return -EINVAL;
    }
    s->crypto_secret = g_bytes_ref(secret);
    /* Whole sectors only, as QEMU: the generic layer completes a partial
     * one (serialised against other writes) before it reaches us. */
    bs->request_alignment = MAX(bs->request_alignment,
                                BLOCK_CRYPTO_SECTOR_SIZE);
    return 0;
}

void qcow2_crypto_close(BDRVQcow2State *s)
{
    g_clear_pointer(&s->crypto, block_crypto_free);
    g_clear_pointer(&s->crypto_secret, g_bytes_unref);
    g_clear_pointer(&s->key_secret_id, g_free);
    if (s->luks_info) {
        luks_info_clear(s->luks_info);
        g_clear_pointer(&s->luks_info, g_free);
    }
}

/* The IV number of the sector holding host offset `host`, which holds
 * guest offset `guest`. */
static uint64_t iv_sector(BDRVQcow2State *s, uint64_t host, uint64_t guest)
{
    return (s->crypt_method == QCOW2_CRYPT_LUKS ? host : guest) /
           BLOCK_CRYPTO_SECTOR_SIZE;
}

/* Reads whole sectors [host, host + len) and decrypts them. */
static int read_sectors(BlockDriverState *bs, uint64_t host, uint64_t guest,
                        uint64_t len, uint8_t *buf)
{
    BDRVQcow2State *s = bs->opaque;
    g_autoptr(GError) err = NULL;
    int ret = bdrv_pread(qcow2_data(bs), host, len, buf);

    if (ret == 0 && !block_crypto_decrypt(s->crypto, iv_sector(s, host, guest),
                                          buf, len, &err)) {
        ret = -EIO;
    }
    return ret;
}

int qcow2_data_pread(BlockDriverState *bs, uint64_t host, uint64_t guest,
                     uint64_t n, uint8_t *buf)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t head, len;
    g_autofree uint8_t *bounce = NULL;

    if (!s->crypt_method) {
        return bdrv_pread(qcow2_data(bs), host, n, buf);
    }
    if (!s->crypto) {
        return -EIO;
    }
    bounce = g_malloc(MIN(qcow2_align_up((host % BLOCK_CRYPTO_SECTOR_SIZE) + n,
                                         BLOCK_CRYPTO_SECTOR_SIZE),
                          CRYPTO_CHUNK));
    while (n > 0) {
        int ret;

        head = host % BLOCK_CRYPTO_SECTOR_SIZE;
        len = MIN(qcow2_align_up(head + n, BLOCK_CRYPTO_SECTOR_SIZE),
                  CRYPTO_CHUNK);
        ret = read_sectors(bs, host - head, guest - head, len, bounce);
        if (ret < 0) {
            return ret;
        }
        len = MIN(len - head, n);
        memcpy(buf, bounce + head, len);
        host += len;
        guest += len;
        buf += len;
        n -= len;
    }
    return 0;
}

/*
 * Encrypts and writes [host, host + n).  A sector the write covers only
 * partly is read and decrypted first, so the bytes around the new ones
 * keep their plaintext.
 */
int qcow2_data_pwrite(BlockDriverState *bs, uint64_t host, uint64_t guest,
                      uint64_t n, const uint8_t *buf)
{
    BDRVQcow2State *s = bs->opaque;
    const uint64_t ss = BLOCK_CRYPTO_SECTOR_SIZE;
    g_autofree uint8_t *bounce = NULL;
    g_autoptr(GError) err = NULL;

    if (!s->crypt_method) {
        return bdrv_pwrite(qcow2_data(bs), host, n, buf);
    }
    if (!s->crypto) {
        return -EIO;
    }
    bounce = g_malloc(MIN(qcow2_align_up((host % ss) + n, ss), CRYPTO_CHUNK));
    while (n > 0) {
        uint64_t head = host % ss;
        uint64_t len = MIN(qcow2_align_up(head + n, ss), CRYPTO_CHUNK);
        uint64_t take = MIN(len - head, n);
        uint64_t start = host - head, gstart = guest - head;
        int ret = 0;

        if (head) {
            ret = read_sectors(bs, start, gstart, ss, bounce);
        }
        if (ret == 0 && (head + take) % ss && (head + take > ss || !head)) {
            uint64_t last = (head + take) / ss * ss;
            ret = read_sectors(bs, start + last, gstart + last, ss,
                               bounce + last);
        }
        if (ret < 0) {
            return ret;
        }
        memcpy(bounce + head, buf, take);
        if (!block_crypto_encrypt(s->crypto, iv_sector(s, start, gstart),
                                  bounce, len, &err)) {
            return -EIO;
        }
        ret = bdrv_pwrite(qcow2_data(bs), start, len, bounce);
        if (ret < 0) {
            return ret;
        }
        host += take;
        guest += take;
        buf += take;
        n -= take;
    }
    return 0;
}

/* For info: the LUKS header's description, read once (NULL: AES, or the
 * header cannot be read). */
const LuksInfo *qcow2_crypto_luks_info(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    g_autoptr(GError) err = NULL;

    if (s->crypt_method != QCOW2_CRYPT_LUKS || !s->has_crypto_hdr) {
        return NULL;
    }
    if (!s->luks_info) {
        LuksInfo *info = g_new0(LuksInfo, 1);
        if (!luks_info(hdr_read, bs, info, &err)) {
            g_free(info);
            return NULL;
        }
        s->luks_info = info;
    }
    return s->luks_info;
}

/*
 * create: a new image gets its encryption.  LUKS: the header goes into
 * new zeroed clusters (after the L1 table, where QEMU puts it), and the
 * header extension points at them.  AES needs only the header field.
 */
int qcow2_crypto_setup(BlockDriverState *bs, const Qcow2CryptoCreate *c,
                       GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    g_autoptr(GBytes) secret = NULL;
    uint64_t hlen, clusters;
    int64_t off;
    int ret;

    if (!c->key_secret) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Parameter 'encrypt.key-secret' is required for cipher");
        return -EINVAL;
    }
    secret = crypto_secret_lookup(c->key_secret, errp);
    if (!secret) {
        return -EINVAL;
    }
    if (c->method == QCOW2_CRYPT_AES) {
        s->crypto = block_crypto_qcow_aes_new(secret, errp);
        if (!s->crypto) {
            return -EINVAL;
        }
        s->crypt_method = QCOW2_CRYPT_AES;
        return qcow2_write_header(bs, errp);
    }
    if (!luks_header_size(&c->luks, &hlen, errp)) {
        return -EINVAL;
    }
    clusters = qcow2_align_up(hlen, s->cluster_size) >> s->cluster_bits;
    g_mutex_lock(&s->lock);
    off = qcow2_alloc_clusters(bs, clusters);
    g_mutex_unlock(&s->lock);
    if (off < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not allocate the encryption header: %s",
                    g_strerror((int)-off));
        return (int)off;
    }
    ret = bdrv_pwrite_zeroes(bs->file, off, clusters << s->cluster_bits, 0);
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not zero fill encryption header: %s",
                    g_strerror(-ret));
        return ret;
    }
    s->crypto_hdr_offset = off;
    s->crypto_hdr_length = hlen;
    s->has_crypto_hdr = true;
    s->crypto = luks_create(&c->luks, secret, hdr_write, bs, errp);
    if (!s->crypto) {
        return -EINVAL;
    }
    s->crypt_method = QCOW2_CRYPT_LUKS;
    return qcow2_write_header(bs, errp);
}

/* ---- amend: the LUKS key slots ---- */

bool qcow2_crypto_amend_requested(BlockOpts *opts)
{
    GHashTableIter it;
    gpointer k;

    g_hash_table_iter_init(&it, opts);
    while (g_hash_table_iter_next(&it, &k, NULL)) {
        if (g_str_has_prefix(k, "encrypt.")) {
            return true;
        }
    }
    return false;
}

/* A secret option of amend: NULL when not given; false on an unknown id. */
static bool amend_secret(BlockOpts *opts, const char *key, GBytes **out,
                         GError **errp)
{
    const char *id = bdrv_opts_get(opts, key);

    *out = NULL;
    if (!id) {
        return true;
    }
    *out = crypto_secret_lookup(id, errp);
    return *out != NULL;
}

static bool parse_amend(BlockOpts *opts, LuksAmendOptions *o, GError **errp)
{
    const char *state = bdrv_opts_get(opts, "encrypt.state");
    uint64_t keyslot = 0, iter_time = 0;

    if (!state) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Parameter 'state' is missing");
        return false;
    }
    if (strcmp(state, "active") && strcmp(state, "inactive")) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Parameter 'state' does not accept value '%s'", state);
        return false;
    }
    o->state_active = !strcmp(state, "active");
    o->keyslot = -1;
    if (bdrv_opts_get(opts, "encrypt.keyslot")) {
        if (!bdrv_opts_get_size(opts, "encrypt.keyslot", 0, &keyslot,
                                errp)) {
            return false;
        }
        o->keyslot = (int)MIN(keyslot, INT_MAX);
    }
    if (!bdrv_opts_get_size(opts, "encrypt.iter-time", 0, &iter_time,
                            errp)) {
        return false;
    }
    o->iter_time_ms = (int64_t)MIN(iter_time, INT64_MAX);
    return amend_secret(opts, "encrypt.old-secret", &o->old_secret, errp) &&
           amend_secret(opts, "encrypt.new-secret", &o->new_secret, errp);
}

int qcow2_crypto_amend(BlockDriverState *bs, BlockOpts *opts, bool force,
                       GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    LuksAmendOptions o = { .force = force };
    int ret = 0;

    if (!s->crypto) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Can't amend encryption options - encryption not "
                    "present");
        return -EINVAL;
    }
    if (s->crypt_method != QCOW2_CRYPT_LUKS) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "Only LUKS encryption options can be amended");
        return -ENOTSUP;
    }
    if (!parse_amend(opts, &o, errp)) {
        ret = -EINVAL;
    } else if (!luks_amend(&o, s->crypto_secret, hdr_read, hdr_write, bs,
                           errp)) {
        ret = -EINVAL;
    } else {
        /* the key slots are the header: make them durable now */
        ret = bdrv_flush(bs->file);
        if (s->luks_info) {
            luks_info_clear(s->luks_info);
            g_clear_pointer(&s->luks_info, g_free);
        }
    }
    g_clear_pointer(&o.old_secret, g_bytes_unref);
    g_clear_pointer(&o.new_secret, g_bytes_unref);
    return ret;
}
