/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Cluster 0 of a qcow2 image: parsing and validating the header, its
 * extensions, the backing file name and the tables it points to, and
 * writing it back.  An image is untrusted input: every field is checked
 * before use, in QEMU's order and with QEMU's messages where QEMU checks
 * the same thing, and no size read from the image drives an allocation
 * before it is known to fit in the file.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "qcow2.h"
#include "qcow2-bitmap.h"
#include "byteorder.h"
#include "block/log.h"

void qcow2_signal_corruption(BlockDriverState *bs, const char *fmt, ...)
{
    BDRVQcow2State *s = bs->opaque;
    g_autofree char *msg = NULL;
    va_list ap;

    if (!bs->read_only) {
        s->broken = true;   /* no more writes, as QEMU ejects the medium */
    }
    if (s->corrupt_reported) {
        return;
    }
    s->corrupt_reported = true;
    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    bdrv_report_corruption(bs, msg, !bs->read_only);
    if (bs->read_only) {
        strata_error("qcow2: Image is corrupt: %s; further non-fatal "
                "corruption events will be suppressed", msg);
        return;
    }
    strata_error("qcow2: Marking image as corrupt: %s; further "
            "corruption events will be suppressed", msg);
    s->incompatible_features |= QCOW2_INCOMPAT_CORRUPT;
    if (s->version < 3) {
        return;  /* no feature bits: offset 72 is an extension there */
    }
    uint64_t be = GUINT64_TO_BE(s->incompatible_features);
    bdrv_pwrite(bs->file, QCOW2_HDR_INCOMPAT_OFF, 8, &be);
    bdrv_flush(bs->file);
}

int qcow2_write_header_bytes(BlockDriverState *bs, int offset,
                             const void *buf, int len)
{
    int ret = qcow2_overlap_pwrite(bs, QCOW2_OL_MAIN_HEADER, offset, len, buf);

    if (ret == 0) {
        ret = bdrv_flush(bs->file);
    }
    return ret;
}

/* Validates a table's placement like QEMU: size first, then alignment and
 * overflow; then, beyond QEMU, that it is inside the file and not on the
 * header. */
static bool validate_table(BDRVQcow2State *s, uint64_t offset,
                           uint64_t entries, size_t entry_len,
                           uint64_t max_bytes, uint64_t file_end,
                           const char *name, bool strict,
                           const char *past_end_hint, GError **errp)
{
    uint64_t bytes;

    if (entries > max_bytes / entry_len) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC, "%s too large", name);
        return false;
    }
    bytes = entries * entry_len;
    if ((offset & (s->cluster_size - 1)) || offset > INT64_MAX - bytes) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "%s offset invalid", name);
        return false;
    }
    if (!strict || bytes == 0) {
        return true;
    }
    if (offset == 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "%s overlaps the image header", name);
        return false;
    }
    if (offset + bytes > file_end) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "%s offset invalid: it lies past the end of the file%s%s",
                    name, past_end_hint ? "\n" : "",
                    past_end_hint ? past_end_hint : "");
        return false;
    }
    return true;
}

static bool ranges_overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
    return alen && blen && a < b + blen && b < a + alen;
}

/*
 * The image's own feature name table (the last one in the header, as QEMU
 * reads it), zero-padded by two entries: a table cut short still names the
 * bits its partial entries hold, and a zero entry always ends it.
 */
static uint8_t *feature_table(const uint8_t *hdr, uint32_t start,
                              uint32_t end, uint32_t *len)
{
    uint8_t *table = NULL;
    uint32_t off = start;

    while (off + 8 <= end) {
        uint32_t magic = be32_read(hdr + off), elen = be32_read(hdr + off + 4);
        off += 8;
        if (magic == QCOW2_EXT_END || elen > end - off) {
            break;
        }
        if (magic == QCOW2_EXT_FEATURE_TABLE) {
            g_free(table);
            table = g_malloc0(elen + 2 * 48);
            memcpy(table, hdr + off, elen);
            *len = elen;
        }
        off += (elen + 7) & ~7U;
    }
    return table;
}

/*
 * QEMU's wording: the incompatible bits the table names, in table order,
 * then whatever is left of the mask as one hex number.
 */
static void report_unsupported(const uint8_t *hdr, uint32_t ext_start,
                               uint32_t ext_end, uint64_t mask, GError **errp)
{
    g_autoptr(GString) msg = g_string_new("");
    uint32_t len = 0;
    g_autofree uint8_t *table = feature_table(hdr, ext_start, ext_end, &len);

    for (uint32_t i = 0; table && i < len + 48 && table[i + 2]; i += 48) {
        uint64_t bit = table[i + 1] < 64 ? 1ULL << table[i + 1] : 0;
        if (table[i] != 0 || !(mask & bit)) {
            continue;
        }
        g_string_append_printf(msg, "%s%.46s", msg->len ? ", " : "",
                               (const char *)table + i + 2);
        mask &= ~bit;
    }
    if (mask) {
        g_string_append_printf(msg, "%sUnknown incompatible feature: %"
                               G_GINT64_MODIFIER "x", msg->len ? ", " : "",
                               mask);
    }
    g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                "Unsupported qcow2 feature(s): %s", msg->str);
}

static void unknown_ext_free(gpointer p)
{
    Qcow2UnknownExt *e = p;
    g_free(e->data);
    g_free(e);
}

static void unknown_ext_add(BDRVQcow2State *s, uint32_t magic,
                            const uint8_t *data, uint32_t len)
{
    Qcow2UnknownExt *e = g_new0(Qcow2UnknownExt, 1);

    e->magic = magic;
    e->len = len;
    e->data = g_memdup2(data, len);
    g_ptr_array_add(s->unknown_exts, e);
}

/* Header extensions between the header and ext_end. */
static bool parse_extensions(BlockDriverState *bs, const uint8_t *hdr,
                             uint32_t start, uint32_t ext_end, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t off = start;

    s->unknown_exts = g_ptr_array_new_with_free_func(unknown_ext_free);
    while (off < ext_end) {
        uint32_t magic, len;
        if (off + 8 > s->cluster_size) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "Header extension too large");
            return false;
        }
        magic = be32_read(hdr + off);
        len = be32_read(hdr + off + 4);
        off += 8;
        if (off > ext_end || len > ext_end - off) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "Header extension too large");
            return false;
        }
        if (magic == QCOW2_EXT_END) {
            break;
        }
        switch (magic) {
        case QCOW2_EXT_BACKING_FMT:
            if (len >= 16) {
                g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                            "ERROR: ext_backing_format: len=%u too large "
                            "(>=16)", len);
                return false;
            }
            g_free(bs->backing_format);
            bs->backing_format = g_strndup((const char *)hdr + off, len);
            break;
        case QCOW2_EXT_FEATURE_TABLE:
            break; /* we write our own */
        case QCOW2_EXT_DATA_FILE:
            /* The name without a NUL; the last extension wins, as in
             * QEMU.  Whether it is used depends on incompatible bit 2. */
            g_free(s->data_file_name);
            s->data_file_name = g_strndup((const char *)hdr + off, len);
            break;
        case QCOW2_EXT_CRYPTO:
            if (!qcow2_crypto_parse_ext(bs, hdr + off, len, errp)) {
                return false;
            }
            break;
        case QCOW2_EXT_BITMAPS:
            if (!qcow2_bitmaps_parse_ext(bs, hdr + off, len, errp)) {
                return false;
            }
            break;
        default:
            unknown_ext_add(s, magic, hdr + off, len);
            break;
        }
        off += (len + 7ULL) & ~7ULL;
    }
    return true;
}

static int read_table(BlockDriverState *bs, uint64_t offset, uint64_t entries,
                      uint64_t **out)
{
    uint64_t *t = g_new0(uint64_t, MAX(entries, 1));
    int ret = entries ? bdrv_pread(bs->file, offset, entries * 8, t) : 0;

    if (ret < 0) {
        g_free(t);
        return ret;
    }
    for (uint64_t i = 0; i < entries; i++) {
        t[i] = GUINT64_FROM_BE(t[i]);
    }
    *out = t;
    return 0;
}

/* Checks each L1 entry and refcount table entry (not in check mode:
 * check reports these itself). */
static bool validate_entries(BlockDriverState *bs, uint64_t file_end,
                             GError **errp)
{
    BDRVQcow2State *s = bs->opaque;

    for (uint32_t i = 0; i < s->l1_size; i++) {
        uint64_t e = s->l1_table[i], off = e & L1E_OFFSET_MASK;
        if (e & L1E_RESERVED_MASK) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "L1 entry %u has reserved bits set: %#"
                        G_GINT64_MODIFIER "x", i, e);
            return false;
        }
        if (off & (s->cluster_size - 1)) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "L1 entry %u: L2 table offset %#" G_GINT64_MODIFIER
                        "x is not cluster aligned", i, off);
            return false;
        }
        if (off && (off >= file_end || off == 0)) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "L1 entry %u: L2 table offset %#" G_GINT64_MODIFIER
                        "x points past the end of the file", i, off);
            return false;
        }
    }
    for (uint32_t i = 0; i < s->refcount_table_size; i++) {
        uint64_t e = s->refcount_table[i], off = e & REFT_OFFSET_MASK;
        if (e & REFT_RESERVED_MASK) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "Reference count table entry %u has reserved bits "
                        "set", i);
            return false;
        }
        /* An unaligned block is let through, as QEMU does: the cache
         * refuses it, marking the image corrupt, when a refcount in it is
         * needed (iotest 305). */
        if (off && off >= file_end) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "Reference count table entry %u: refcount block "
                        "offset %#" G_GINT64_MODIFIER "x is invalid", i, off);
            return false;
        }
    }
    return true;
}

int qcow2_read_header(BlockDriverState *bs, int flags, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    bool rw = !!(flags & BDRV_O_RDWR);
    bool check = !!(flags & BDRV_O_CHECK);
    int64_t file_len = bdrv_getlength(bs->file);
    uint8_t first[QCOW2_V3_HEADER_LENGTH];
    g_autofree uint8_t *hdr = NULL;
    uint64_t backing_off, file_end, l1_needed, header_size;
    uint32_t backing_len, ext_end, crypt, reftable_clusters;
    uint32_t version, refcount_order = 0;
    int ret;

    if (file_len < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not determine file size: %s", g_strerror(-file_len));
        return (int)file_len;
    }
    ret = bdrv_pread(bs->file, 0, sizeof(first), first);
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not read qcow2 header: %s", g_strerror(-ret));
        return ret;
    }
    if (be32_read(first) != QCOW_MAGIC) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Image is not in qcow2 format");
        return -EINVAL;
    }
    version = be32_read(first + 4);
    if (version < 2 || version > 3) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "Unsupported qcow2 version %" PRIu32, version);
        return -ENOTSUP;
    }
    s->version = (int)version;
    s->cluster_bits = be32_read(first + 20);
    if (s->cluster_bits < QCOW2_MIN_CLUSTER_BITS ||
        s->cluster_bits > QCOW2_MAX_CLUSTER_BITS) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Unsupported cluster size: 2^%u", s->cluster_bits);
        return -EINVAL;
    }
    s->cluster_size = 1U << s->cluster_bits;
    s->l2_entry_shift = 0;
    s->subcluster_bits = s->cluster_bits;
    s->l2_bits = s->cluster_bits - 3;
    s->l2_size = 1U << s->l2_bits;
    s->csize_shift = 62 - (s->cluster_bits - 8);
    s->csize_mask = (1ULL << (s->cluster_bits - 8)) - 1;
    s->coffset_mask = (1ULL << s->csize_shift) - 1;

    /* The whole header cluster: extensions and backing name live in it. */
    hdr = g_malloc0(s->cluster_size);
    ret = bdrv_pread(bs->file, 0, MIN((int64_t)s->cluster_size, file_len), hdr);
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not read qcow2 header: %s", g_strerror(-ret));
        return ret;
    }
    if (s->version == 2) {
        s->header_length = QCOW2_V2_HEADER_LENGTH;
        refcount_order = 4;
    } else {
        s->incompatible_features = be64_read(hdr + 72);
        s->compatible_features = be64_read(hdr + 80);
        s->autoclear_features = be64_read(hdr + 88);
        refcount_order = be32_read(hdr + 96);
        s->header_length = be32_read(hdr + 100);
        if (s->header_length < QCOW2_V3_MIN_HEADER_LENGTH) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "qcow2 header too short");
            return -EINVAL;
        }
    }
    if (s->header_length > s->cluster_size) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "qcow2 header exceeds cluster size");
        return -EINVAL;
    }
    if (s->header_length > QCOW2_V3_HEADER_LENGTH) {
        s->unknown_header_fields_size = s->header_length - QCOW2_V3_HEADER_LENGTH;
        s->unknown_header_fields = g_memdup2(hdr + QCOW2_V3_HEADER_LENGTH,
                                             s->unknown_header_fields_size);
    }
    backing_off = be64_read(hdr + 8);
    backing_len = be32_read(hdr + 16);
    if (backing_off > s->cluster_size) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Invalid backing file offset");
        return -EINVAL;
    }
    ext_end = backing_off ? (uint32_t)backing_off : s->cluster_size;

    if (s->header_length > 104) {
        s->compression_type = hdr[104];
        if (s->compression_type > 1) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "qcow2: unknown compression type: %u",
                        s->compression_type);
            return -EINVAL;
        }
    }
    if (s->compression_type != 0 &&
        !(s->incompatible_features & QCOW2_INCOMPAT_COMPRESSION)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "qcow2: Compression type incompatible feature bit must "
                    "be set");
        return -EINVAL;
    }
    if (s->compression_type == 0 &&
        (s->incompatible_features & QCOW2_INCOMPAT_COMPRESSION)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "qcow2: Compression type incompatible feature bit must "
                    "not be set");
        return -EINVAL;
    }
    if (s->incompatible_features & ~QCOW2_INCOMPAT_MASK) {
        report_unsupported(hdr, s->header_length, ext_end,
                           s->incompatible_features & ~QCOW2_INCOMPAT_MASK,
                           errp);
        return -ENOTSUP;
    }
    if ((s->incompatible_features & QCOW2_INCOMPAT_CORRUPT) && rw && !check) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "qcow2: Image is corrupt; cannot be opened read/write");
        return -EACCES;
    }
    if (s->incompatible_features & QCOW2_INCOMPAT_EXTL2) {
        s->l2_entry_shift = 1;
        s->l2_bits = s->cluster_bits - 4;
        s->l2_size = 1U << s->l2_bits;
        s->subcluster_bits = s->cluster_bits - 5;
        /* Subclusters are at least a sector, so clusters 16 KiB. */
        if (s->subcluster_bits < QCOW2_MIN_CLUSTER_BITS) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "Unsupported subcluster size: %u",
                        1U << s->subcluster_bits);
            return -EINVAL;
        }
    }
    /* A dirty image opened read/write has its refcounts repaired at the
     * end of the open (qcow2_repair_dirty). */
    /* Unsigned, as on disk: a huge value must not pass as negative. */
    if (refcount_order > 6) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Reference count entry width too large; may not exceed "
                    "64 bits");
        return -EINVAL;
    }
    s->refcount_order = (int)refcount_order;
    s->refcount_bits = 1 << s->refcount_order;
    s->refcount_max = s->refcount_bits == 64 ? UINT64_MAX :
                      (1ULL << s->refcount_bits) - 1;
    s->refblock_bits = s->cluster_bits + 3 - s->refcount_order;
    s->refblock_size = 1U << s->refblock_bits;

    crypt = be32_read(hdr + 32);
    if (crypt > 2) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Unsupported encryption method %d", crypt);
        return -EINVAL;
    }
    s->crypt_method = crypt;

    file_end = qcow2_align_up(file_len, s->cluster_size);
    /* Like QEMU, the disk has whole 512-byte sectors: a size that is not
     * a multiple of 512 is rounded down (the L1 check uses it as is). */
    header_size = be64_read(hdr + 24);
    s->size = header_size & ~(uint64_t)(BDRV_SECTOR_SIZE - 1);
    s->l1_size = be32_read(hdr + 36);
    s->l1_table_offset = be64_read(hdr + 40);
    s->refcount_table_offset = be64_read(hdr + 48);
    reftable_clusters = be32_read(hdr + 56);
    s->nb_snapshots = be32_read(hdr + 60);
    s->snapshots_offset = be64_read(hdr + 64);

    /* check -r all builds one; QEMU opens such an image for checks too */
    if (reftable_clusters == 0 && !check) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Image does not contain a reference count table");
        return -EINVAL;
    }
    if (!validate_table(s, s->refcount_table_offset,
                        (uint64_t)reftable_clusters * s->cluster_size / 8, 8,
                        QCOW2_MAX_REFTABLE_BYTES, file_end,
                        "Reference count table", !check, NULL, errp)) {
        return -EINVAL;
    }
    s->refcount_table_size = (uint64_t)reftable_clusters * s->cluster_size / 8;
    /* check reads at most the allowed number of entries and reports (or
     * with -r all drops) the rest, as QEMU's does */
    if (!validate_table(s, s->snapshots_offset,
                        check ? MIN(s->nb_snapshots, QCOW2_MAX_SNAPSHOTS)
                              : s->nb_snapshots, 40,
                        40 * QCOW2_MAX_SNAPSHOTS, file_end, "Snapshot table",
                        !check,
                        /* cut off by a truncated file: check can mend it */
                        "You can force-remove the snapshots past the end of "
                        "the file with qemu-img check -r all", errp)) {
        return -EINVAL;
    }
    if (!validate_table(s, s->l1_table_offset, s->l1_size, 8,
                        QCOW2_MAX_L1_BYTES, file_end, "Active L1 table",
                        true, NULL, errp)) {
        return -EINVAL;
    }
    if (header_size > (uint64_t)INT64_MAX - s->cluster_size) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Image size %" G_GUINT64_FORMAT " is too large",
                    header_size);
        return -EFBIG;
    }
    l1_needed = qcow2_l1_entries_for(s, header_size);
    /* QEMU's limit and text; a smaller excess is "L1 table is too small"
     * below, since l1_size itself was checked against the 32 MiB limit */
    if (l1_needed > INT_MAX) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Image is too big");
        return -EFBIG;
    }
    if (s->l1_size < l1_needed) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "L1 table is too small");
        return -EINVAL;
    }
    /* check -r all rebuilds a refcount table that lies on the L1 table */
    if (!check &&
        ranges_overlap(s->l1_table_offset, (uint64_t)s->l1_size * 8,
                       s->refcount_table_offset,
                       (uint64_t)reftable_clusters * s->cluster_size)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Active L1 table overlaps the reference count table");
        return -EINVAL;
    }

    if (!parse_extensions(bs, hdr, s->header_length, ext_end, errp)) {
        return -EINVAL;
    }
    if (backing_off) {
        if (backing_len > QCOW2_MAX_BACKING_NAME ||
            backing_len > s->cluster_size - backing_off) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "Backing file name too long");
            return -EINVAL;
        }
        if (backing_len) {
            bs->backing_file = g_strndup((const char *)hdr + backing_off,
                                         backing_len);
            if (strlen(bs->backing_file) != backing_len) {
                g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                            "Backing file name contains a NUL byte");
                return -EINVAL;
            }
        }
    }

    bdrv_debug_event(bs->file, "reftable_load");
    ret = read_table(bs, s->refcount_table_offset, s->refcount_table_size,
                     &s->refcount_table);
    if (ret == 0) {
        ret = read_table(bs, s->l1_table_offset, s->l1_size, &s->l1_table);
    }
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not read L1 or refcount table: %s",
                    g_strerror(-ret));
        return ret;
    }
    if (!check && !validate_entries(bs, file_end, errp)) {
        return -EINVAL;
    }
    return 0;
}

/* The feature names QEMU writes, so qemu-img can name our bits too. */
static const struct { uint8_t type, bit; const char *name; } feature_names[] = {
    { 0, 0, "dirty bit" },
    { 0, 1, "corrupt bit" },
    { 0, 2, "external data file" },
    { 0, 3, "compression type" },
    { 0, 4, "extended L2 entries" },
    { 1, 0, "lazy refcounts" },
    { 2, 0, "bitmaps" },
    { 2, 1, "raw external data" },
};

static bool put_ext(uint8_t *buf, size_t *off, size_t limit, uint32_t magic,
                    const void *data, uint32_t len)
{
    size_t padded = (len + 7) & ~7U;

    if (*off + 8 + padded > limit) {
        return false;
    }
    be32_write(buf + *off, magic);
    be32_write(buf + *off + 4, len);
    if (len) {
        memcpy(buf + *off + 8, data, len);
    }
    *off += 8 + padded;
    return true;
}

/*
 * Rewrites all of cluster 0 from the in-memory state, in one write:
 * header, unknown header fields, backing format, data file, feature
 * table, bitmaps, unknown extensions, end marker, then the backing file
 * name.  sync: flush the file after it (the intent extension relies on a
 * later flush instead).
 */
static int write_header(BlockDriverState *bs, bool sync, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    g_autofree uint8_t *buf = g_malloc0(s->cluster_size);
    size_t off, limit = s->cluster_size;
    uint32_t hlen;
    size_t blen = bs->backing_file ? strlen(bs->backing_file) : 0;
    int ret;

    hlen = s->version >= 3 ? QCOW2_V3_HEADER_LENGTH +
                             s->unknown_header_fields_size
                           : QCOW2_V2_HEADER_LENGTH;
    be32_write(buf + 0, QCOW_MAGIC);
    be32_write(buf + 4, s->version);
    be32_write(buf + 20, s->cluster_bits);
    be64_write(buf + 24, s->size);
    be32_write(buf + 32, s->crypt_method);
    be32_write(buf + 36, s->l1_size);
    be64_write(buf + 40, s->l1_table_offset);
    be64_write(buf + 48, s->refcount_table_offset);
    be32_write(buf + 56, (uint32_t)((uint64_t)s->refcount_table_size * 8 /
                                 s->cluster_size));
    be32_write(buf + 60, s->nb_snapshots);
    be64_write(buf + 64, s->snapshots_offset);
    if (s->version >= 3) {
        be64_write(buf + 72, s->incompatible_features);
        be64_write(buf + 80, s->compatible_features);
        be64_write(buf + 88, s->autoclear_features);
        be32_write(buf + 96, s->refcount_order);
        be32_write(buf + 100, hlen);
        buf[104] = s->compression_type;
        if (s->unknown_header_fields_size) {
            memcpy(buf + QCOW2_V3_HEADER_LENGTH, s->unknown_header_fields,
                   s->unknown_header_fields_size);
        }
    }
    off = hlen;
    limit -= blen;
    bool ok = true;
    if (bs->backing_format) {
        ok = put_ext(buf, &off, limit, QCOW2_EXT_BACKING_FMT,
                     bs->backing_format, strlen(bs->backing_format));
    }
    /* QEMU's order: the data file name right after the backing format. */
    if (ok && qcow2_has_data_file(s) && s->data_file_name) {
        ok = put_ext(buf, &off, limit, QCOW2_EXT_DATA_FILE,
                     s->data_file_name, strlen(s->data_file_name));
    }
    /* then the LUKS header's place */
    uint8_t crypto_ext[16];
    if (ok && qcow2_crypto_ext_bytes(s, crypto_ext)) {
        ok = put_ext(buf, &off, limit, QCOW2_EXT_CRYPTO, crypto_ext,
                     sizeof(crypto_ext));
    }
    if (ok && s->version >= 3 && s->cluster_size > 4096) {
        uint8_t table[G_N_ELEMENTS(feature_names) * 48] = { 0 };
        for (size_t i = 0; i < G_N_ELEMENTS(feature_names); i++) {
            table[i * 48] = feature_names[i].type;
            table[i * 48 + 1] = feature_names[i].bit;
            memcpy(table + i * 48 + 2, feature_names[i].name,
                   strlen(feature_names[i].name));
        }
        ok = put_ext(buf, &off, limit, QCOW2_EXT_FEATURE_TABLE, table,
                     sizeof(table));
    }
    /* QEMU's order: the bitmaps after the feature table. */
    uint8_t bitmaps_ext[QCOW2_BITMAPS_EXT_LEN];
    if (ok && qcow2_bitmaps_ext_bytes(s, bitmaps_ext)) {
        ok = put_ext(buf, &off, limit, QCOW2_EXT_BITMAPS, bitmaps_ext,
                     sizeof(bitmaps_ext));
    }
    for (guint i = 0; ok && s->unknown_exts && i < s->unknown_exts->len; i++) {
        Qcow2UnknownExt *e = g_ptr_array_index(s->unknown_exts, i);
        ok = put_ext(buf, &off, limit, e->magic, e->data, e->len);
    }
    ok = ok && put_ext(buf, &off, limit, QCOW2_EXT_END, NULL, 0);
    if (!ok || blen > QCOW2_MAX_BACKING_NAME) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Header does not fit in one cluster (backing file name "
                    "too long?)");
        return -ENOSPC;
    }
    if (blen) {
        memcpy(buf + off, bs->backing_file, blen);
        be64_write(buf + 8, off);
        be32_write(buf + 16, blen);
    }
    ret = qcow2_overlap_pwrite(bs, QCOW2_OL_MAIN_HEADER, 0, s->cluster_size,
                               buf);
    if (ret == 0 && sync) {
        ret = bdrv_flush(bs->file);
    }
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not write qcow2 header: %s", g_strerror(-ret));
    }
    return ret;
}

int qcow2_write_header(BlockDriverState *bs, GError **errp)
{
    return write_header(bs, true, errp);
}

int qcow2_write_header_nosync(BlockDriverState *bs, GError **errp)
{
    return write_header(bs, false, errp);
}
