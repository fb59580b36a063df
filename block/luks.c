/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The "luks" format driver: a LUKS1 volume as QEMU's driver of that name
 * keeps it.  The header and its key slots fill the start of the file;
 * the guest's disk follows from the payload offset, each 512-byte sector
 * encrypted with an IV from its number counted from the payload's start.
 *
 * Options as QEMU's: key-secret (the id of a --object secret) to open;
 * key-secret, cipher-alg, cipher-mode, ivgen-alg, ivgen-hash-alg,
 * hash-alg and iter-time to create.  An open only to describe the image
 * (BDRV_O_NO_IO) needs no key.
 */
#include <errno.h>
#include <string.h>

#include "block/block_int.h"
#include "block/crypto.h"
#include "block/drivers.h"

/* Data passes through a bounce buffer of at most this many bytes. */
#define LUKS_CHUNK (1024 * 1024)

typedef struct BDRVLuksState {
    BlockCrypto *crypto;       /* NULL: opened only to be described */
    char *key_secret_id;       /* key-secret as given at open */
    uint64_t payload;          /* bytes */
    LuksInfo info;
} BDRVLuksState;

static const uint8_t luks_magic[6] = { 'L', 'U', 'K', 'S', 0xba, 0xbe };

static int luksfmt_probe(const uint8_t *buf, int buf_size, const char *filename)
{
    /* LUKS1 only (version 1 after the magic), as QEMU probes it: a LUKS2
     * volume is not this driver's */
    return buf_size >= 8 && !memcmp(buf, luks_magic, 6) && buf[6] == 0 &&
           buf[7] == 1 ? 100 : 0;
}

bool luks_file_read(void *opaque, uint64_t offset, void *buf, size_t len,
                    GError **errp)
{
    BlockDriverState *file = opaque;
    int ret = bdrv_pread(file, offset, len, buf);

    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not read encryption header: %s", g_strerror(-ret));
        return false;
    }
    return true;
}

bool luks_file_write(void *opaque, uint64_t offset, const void *buf,
                     size_t len, GError **errp)
{
    BlockDriverState *file = opaque;
    int ret = bdrv_pwrite(file, offset, len, buf);

    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not write encryption header: %s",
                    g_strerror(-ret));
        return false;
    }
    return true;
}

static int luksfmt_open(BlockDriverState *bs, BlockOpts *options, int flags,
                     GError **errp)
{
    BDRVLuksState *s = bs->opaque;
    g_autofree char *id = bdrv_opts_take(options, "key-secret");
    g_autoptr(GBytes) secret = NULL;

    if (!luks_info(luks_file_read, bs->file, &s->info, errp)) {
        return -EINVAL;
    }
    s->payload = s->info.payload_offset;
    s->key_secret_id = g_strdup(id);
    bs->request_alignment = MAX(BLOCK_CRYPTO_SECTOR_SIZE,
                                bs->file->request_alignment);
    if (flags & BDRV_O_NO_IO) {
        return 0;
    }
    if (!id) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Parameter 'key-secret' is required for cipher");
        return -EINVAL;
    }
    secret = crypto_secret_lookup(id, errp);
    if (!secret) {
        return -EINVAL;
    }
    s->crypto = luks_open(secret, luks_file_read, bs->file, errp);
    return s->crypto ? 0 : -EINVAL;
}

static void luksfmt_close(BlockDriverState *bs)
{
    BDRVLuksState *s = bs->opaque;

    g_clear_pointer(&s->crypto, block_crypto_free);
    g_clear_pointer(&s->key_secret_id, g_free);
    luks_info_clear(&s->info);
}

static int luksfmt_pread(BlockDriverState *bs, int64_t offset, int64_t bytes,
                      void *buf)
{
    BDRVLuksState *s = bs->opaque;
    g_autoptr(GError) err = NULL;
    int ret;

    if (!s->crypto) {
        return -EIO;
    }
    ret = bdrv_pread(bs->file, s->payload + offset, bytes, buf);
    if (ret == 0 &&
        !block_crypto_decrypt(s->crypto, offset / BLOCK_CRYPTO_SECTOR_SIZE,
                              buf, bytes, &err)) {
        ret = -EIO;
    }
    return ret;
}

/* Encrypts a copy of the data, a chunk at a time: buf is the caller's. */
static int luksfmt_pwrite(BlockDriverState *bs, int64_t offset, int64_t bytes,
                       const void *buf)
{
    BDRVLuksState *s = bs->opaque;
    g_autofree uint8_t *bounce = NULL;
    const uint8_t *p = buf;

    if (!s->crypto) {
        return -EIO;
    }
    bounce = g_malloc(MIN(bytes, LUKS_CHUNK));
    while (bytes > 0) {
        g_autoptr(GError) err = NULL;
        int64_t n = MIN(bytes, LUKS_CHUNK);
        int ret;

        memcpy(bounce, p, n);
        if (!block_crypto_encrypt(s->crypto,
                                  offset / BLOCK_CRYPTO_SECTOR_SIZE, bounce,
                                  n, &err)) {
            return -EIO;
        }
        ret = bdrv_pwrite(bs->file, s->payload + offset, n, bounce);
        if (ret < 0) {
            return ret;
        }
        offset += n;
        bytes -= n;
        p += n;
    }
    return 0;
}

/* Zeroes must be encrypted like any other data. */
static int luksfmt_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                              int64_t bytes, int flags)
{
    g_autofree uint8_t *zeroes = g_malloc0(MIN(bytes, LUKS_CHUNK));

    while (bytes > 0) {
        int64_t n = MIN(bytes, LUKS_CHUNK);
        int ret = luksfmt_pwrite(bs, offset, n, zeroes);

        if (ret < 0) {
            return ret;
        }
        offset += n;
        bytes -= n;
    }
    return 0;
}

static int64_t luksfmt_getlength(BlockDriverState *bs)
{
    BDRVLuksState *s = bs->opaque;
    int64_t len = bdrv_getlength(bs->file);

    if (len < 0) {
        return len;
    }
    return len > (int64_t)s->payload ? len - (int64_t)s->payload : 0;
}

static int luksfmt_truncate(BlockDriverState *bs, int64_t size, GError **errp)
{
    BDRVLuksState *s = bs->opaque;

    return bdrv_truncate(bs->file, (int64_t)s->payload + size, errp);
}

/* Everything is data: the file's holes would decrypt to garbage. */
static int luksfmt_block_status(BlockDriverState *bs, int64_t offset,
                             int64_t bytes, int64_t *pnum, int64_t *map,
                             BlockDriverState **file)
{
    *pnum = bytes;
    return BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED;
}

static int luksfmt_get_info(BlockDriverState *bs, BlockDriverInfo *bdi)
{
    return 0;
}

static void luksfmt_get_specific_info(BlockDriverState *bs,
                                   BlockSpecificInfo *info)
{
    BDRVLuksState *s = bs->opaque;

    info->type = "luks";
    info->encrypt_format = "luks";
    info->luks = &s->info;
    if (s->key_secret_id) {
        info->key_secret_opt = "key-secret";
        info->key_secret = s->key_secret_id;
    }
}

static bool luksfmt_create(const char *filename, BlockOpts *opts, GError **errp)
{
    uint64_t size, iter_time = 0, hlen;
    const char *id = bdrv_opts_get(opts, "key-secret");
    LuksCreateOptions lo = {
        .cipher_alg = bdrv_opts_get(opts, "cipher-alg"),
        .cipher_mode = bdrv_opts_get(opts, "cipher-mode"),
        .ivgen_alg = bdrv_opts_get(opts, "ivgen-alg"),
        .ivgen_hash_alg = bdrv_opts_get(opts, "ivgen-hash-alg"),
        .hash_alg = bdrv_opts_get(opts, "hash-alg"),
    };
    g_autoptr(BlockDriverState) file = NULL;
    g_autoptr(BlockCrypto) crypto = NULL;
    BlockOpts *fopts;
    g_autoptr(GBytes) secret = NULL;
    int ret;

    if (!bdrv_opts_get_size(opts, "size", 0, &size, errp) ||
        !bdrv_opts_get_size(opts, "iter-time", 0, &iter_time, errp)) {
        return false;
    }
    lo.iter_time_ms = (int64_t)MIN(iter_time, INT64_MAX);
    if (!id) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Parameter 'key-secret' is required for cipher");
        return false;
    }
    secret = crypto_secret_lookup(id, errp);
    if (!secret || !luks_header_size(&lo, &hlen, errp)) {
        return false;
    }
    size = (size + BLOCK_CRYPTO_SECTOR_SIZE - 1) /
           BLOCK_CRYPTO_SECTOR_SIZE * BLOCK_CRYPTO_SECTOR_SIZE;
    if (!file_create_with_size(filename, 0, errp)) {
        return false;
    }
    fopts = bdrv_opts_new();
    bdrv_opts_set(fopts, "driver", file_protocol_for(filename));
    file = bdrv_open(filename, fopts, BDRV_O_RDWR, errp);
    if (!file) {
        return false;
    }
    crypto = luks_create(&lo, secret, luks_file_write, file, errp);
    if (!crypto) {
        return false;
    }
    ret = bdrv_truncate(file, (int64_t)(hlen + size), errp);
    if (ret == 0) {
        ret = bdrv_flush(file);
        if (ret < 0) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                        "Could not flush the new image: %s",
                        g_strerror(-ret));
        }
    }
    return ret == 0;
}

BlockDriver bdrv_luks = {
    .format_name = "luks",
    .instance_size = sizeof(BDRVLuksState),
    .probe = luksfmt_probe,
    .open = luksfmt_open,
    .close = luksfmt_close,
    .create = luksfmt_create,
    .pread = luksfmt_pread,
    .pwrite = luksfmt_pwrite,
    .pwrite_zeroes = luksfmt_pwrite_zeroes,
    .getlength = luksfmt_getlength,
    .truncate = luksfmt_truncate,
    .block_status = luksfmt_block_status,
    .get_info = luksfmt_get_info,
    .get_specific_info = luksfmt_get_specific_info,
};
