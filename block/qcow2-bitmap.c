/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Persistent dirty bitmaps in qcow2 (QEMU's docs/interop/qcow2.txt,
 * "Bitmaps extension"): a directory of entries, each pointing at a table
 * of cluster offsets holding the bitmap's bits (bit i of the bitmap is
 * bit i%8 of byte i/8; a zero table entry is a cluster of zero bits).
 *
 * The life of a bitmap follows QEMU's, so that QEMU and strata can take
 * turns on one image:
 * - a read-write open loads every consistent bitmap and then marks it
 *   "in use" in the directory on disk (rewritten in place while the
 *   autoclear bit is off, so a crash half way leaves the extension
 *   untrusted, never trusted and wrong);
 * - every guest write, zero write and discard marks the enabled ones;
 * - close writes each loaded bitmap to new clusters, then a new
 *   directory, makes the counts durable, switches the header to it, and
 *   only then frees the old clusters.
 * A crash while the image is open leaves the bitmaps "in use": QEMU and
 * strata then treat them as inconsistent (kept, never used), which is
 * what the format asks for.
 *
 * Cluster placement follows QEMU's order of allocations (data clusters
 * of each bitmap, its table, then the directory), so the files match.
 */
#include <errno.h>
#include <string.h>

#include "block/dirty-bitmap.h"
#include "block/log.h"
#include "byteorder.h"
#include "qcow2-bitmap.h"

#define BME_MAX_TABLE_SIZE 0x8000000U
#define BME_MAX_PHYS_SIZE 0x20000000U
#define BME_MAX_GRANULARITY_BITS 31
#define BME_MIN_GRANULARITY_BITS 9
#define BME_MAX_NAME_SIZE 1023
#define BME_RESERVED_FLAGS 0xfffffffcU
#define BME_FLAG_IN_USE (1U << 0)
#define BME_FLAG_AUTO (1U << 1)
#define BME_TYPE_DIRTY_TRACKING 1
#define BME_ENTRY_RESERVED_MASK 0xff000000000001feULL
#define BME_ENTRY_OFFSET_MASK 0x00fffffffffffe00ULL
#define BME_ENTRY_ALL_ONES 1ULL
#define BITMAPS_MAX 65535U
#define BITMAP_DIR_MAX (1024U * BITMAPS_MAX)
#define DIR_ENTRY_FIXED 24

typedef struct Qcow2Bitmap {
    char *name;
    uint8_t granularity_bits;
    /* The entry in the directory on disk (on_disk false: added in this
     * open, not stored yet). */
    bool on_disk;
    uint32_t disk_flags;
    uint64_t table_offset;
    uint32_t table_size;
    /* In memory: the bits while loaded for writing (NULL otherwise, and
     * always for an inconsistent bitmap, which is kept as it is). */
    uint8_t *bits;
    uint64_t nb_bits;
    bool enabled;
    bool inconsistent;
} Qcow2Bitmap;

struct Qcow2Bitmaps {
    /* from the header extension */
    uint32_t nb;
    uint64_t dir_offset, dir_size;
    bool dropped;              /* stale extension ignored */
    /* the directory, in order, then bitmaps added since the open */
    GPtrArray *list;
    bool loaded;               /* bits held, stored at close */
    /* Guards bits and enabled against concurrent data requests; metadata
     * work runs under s->lock and needs this one only for the bits. */
    GMutex lock;
};

static Qcow2Bitmaps *bitmaps_get(BDRVQcow2State *s)
{
    if (!s->bm) {
        s->bm = g_new0(Qcow2Bitmaps, 1);
        s->bm->list = g_ptr_array_new();
        g_mutex_init(&s->bm->lock);
    }
    return s->bm;
}

static void bitmap_free(Qcow2Bitmap *b)
{
    if (b) {
        g_free(b->name);
        g_free(b->bits);
        g_free(b);
    }
}

void qcow2_bitmaps_free(BDRVQcow2State *s)
{
    if (!s->bm) {
        return;
    }
    for (guint i = 0; i < s->bm->list->len; i++) {
        bitmap_free(g_ptr_array_index(s->bm->list, i));
    }
    g_ptr_array_free(s->bm->list, TRUE);
    g_mutex_clear(&s->bm->lock);
    g_clear_pointer(&s->bm, g_free);
}

static const char *prog_prefix(void)
{
    const char *prog = g_get_prgname();
    return prog ? prog : "strata";
}

/* ---- the header extension ---- */

bool qcow2_bitmaps_parse_ext(BlockDriverState *bs, const uint8_t *data,
                             uint32_t len, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2Bitmaps *bm;
    uint32_t nb;
    uint64_t dir_size, dir_offset;

    if (len != QCOW2_BITMAPS_EXT_LEN) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "bitmaps_ext: Invalid extension length");
        return false;
    }
    bm = bitmaps_get(s);
    if (!(s->autoclear_features & QCOW2_AUTOCLEAR_BITMAPS)) {
        if (s->version < 3) {
            strata_warning("%s: warning: This qcow2 v2 image contains "
                           "bitmaps, but they may have been modified by a "
                           "program without persistent bitmap support; so "
                           "now they must all be considered inconsistent",
                           prog_prefix());
        } else {
            strata_warning("%s: warning: a program lacking bitmap support "
                           "modified this file, so all bitmaps are now "
                           "considered inconsistent", prog_prefix());
        }
        strata_warning("Some clusters may be leaked, run 'qemu-img check -r' "
                       "on the image file to fix.");
        bm->dropped = true;
        return true;
    }
    nb = be32_read(data);
    dir_size = be64_read(data + 8);
    dir_offset = be64_read(data + 16);
    if (be32_read(data + 4) != 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "bitmaps_ext: Reserved field is not zero");
        return false;
    }
    if (nb > BITMAPS_MAX) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "bitmaps_ext: Image has %u bitmaps, exceeding the QEMU "
                    "supported maximum of %u", nb, BITMAPS_MAX);
        return false;
    }
    if (nb == 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "found bitmaps extension with zero bitmaps");
        return false;
    }
    if (dir_offset & (s->cluster_size - 1)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "bitmaps_ext: invalid bitmap directory offset");
        return false;
    }
    if (dir_size > BITMAP_DIR_MAX) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "bitmaps_ext: bitmap directory size (%" G_GUINT64_FORMAT
                    ") exceeds the maximum supported size (%u)",
                    dir_size, BITMAP_DIR_MAX);
        return false;
    }
    bm->nb = nb;
    bm->dir_size = dir_size;
    bm->dir_offset = dir_offset;
    return true;
}

bool qcow2_bitmaps_ext_bytes(BDRVQcow2State *s, uint8_t out[24])
{
    if (!s->bm || s->bm->nb == 0) {
        return false;
    }
    be32_write(out, s->bm->nb);
    be32_write(out + 4, 0);
    be64_write(out + 8, s->bm->dir_size);
    be64_write(out + 16, s->bm->dir_offset);
    return true;
}

bool qcow2_bitmaps_ext_dropped(BDRVQcow2State *s)
{
    return s->bm && s->bm->dropped;
}

uint64_t qcow2_bitmaps_autoclear(BDRVQcow2State *s)
{
    return s->bm && s->bm->nb ? QCOW2_AUTOCLEAR_BITMAPS : 0;
}

bool qcow2_bitmaps_present(BDRVQcow2State *s)
{
    return s->bm && s->bm->list->len > 0;
}

/* ---- sizes ---- */

static uint64_t bits_for(uint64_t disk_size, uint8_t granularity_bits)
{
    return (disk_size + (1ULL << granularity_bits) - 1) >> granularity_bits;
}

/* Bytes of the serialised bits (QEMU serialises whole 64-bit words). */
static uint64_t serialized_bytes(uint64_t nb_bits)
{
    return (nb_bits + 63) / 64 * 8;
}

static uint64_t table_entries_for(BDRVQcow2State *s, uint64_t nb_bits)
{
    return (serialized_bytes(nb_bits) + s->cluster_size - 1) /
           s->cluster_size;
}

static uint32_t dir_entry_size(size_t name_len, uint32_t extra)
{
    return (DIR_ENTRY_FIXED + name_len + extra + 7) & ~7U;
}

/* QEMU's check of a directory entry (check_dir_entry). */
static bool entry_valid(BDRVQcow2State *s, uint64_t table_offset,
                        uint32_t table_size, uint32_t flags, uint8_t type,
                        uint8_t granularity_bits, uint16_t name_size)
{
    uint64_t phys = (uint64_t)table_size * s->cluster_size;

    if (table_size == 0 || table_offset == 0 ||
        (table_offset & (s->cluster_size - 1)) ||
        table_size > BME_MAX_TABLE_SIZE ||
        granularity_bits > BME_MAX_GRANULARITY_BITS ||
        granularity_bits < BME_MIN_GRANULARITY_BITS ||
        (flags & BME_RESERVED_FLAGS) || name_size > BME_MAX_NAME_SIZE ||
        type != BME_TYPE_DIRTY_TRACKING || phys > BME_MAX_PHYS_SIZE) {
        return false;
    }
    /* A consistent bitmap must cover the disk; an in-use one may be the
     * size of the disk before a resize it missed. */
    return (flags & BME_FLAG_IN_USE) ||
           s->size <= ((phys * 8) << granularity_bits);
}

/* ---- the directory ---- */

static int read_directory(BlockDriverState *bs, Qcow2Bitmaps *bm,
                          GPtrArray **out, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    g_autoptr(GPtrArray) list = g_ptr_array_new_with_free_func(
        (GDestroyNotify)bitmap_free);
    g_autofree uint8_t *dir = NULL;
    uint64_t pos = 0;
    uint32_t count = 0;
    int ret;

    if (bm->dir_size == 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Requested bitmap directory size is zero");
        return -EINVAL;
    }
    dir = g_malloc(bm->dir_size);
    ret = bdrv_pread(bs->file, bm->dir_offset, bm->dir_size, dir);
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Failed to read bitmap directory: %s", g_strerror(-ret));
        return ret;
    }
    while (pos < bm->dir_size) {
        const uint8_t *e = dir + pos;
        uint16_t name_size;
        uint32_t extra, flags, esize;
        Qcow2Bitmap *b;

        if (bm->dir_size - pos < DIR_ENTRY_FIXED) {
            goto broken;
        }
        if (++count > bm->nb) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "More bitmaps found than specified in header "
                        "extension");
            return -EINVAL;
        }
        flags = be32_read(e + 12);
        name_size = be16_read(e + 18);
        extra = be32_read(e + 20);
        esize = dir_entry_size(name_size, extra);
        if ((uint64_t)extra + name_size + DIR_ENTRY_FIXED > bm->dir_size - pos
            || esize > bm->dir_size - pos) {
            goto broken;
        }
        if (extra != 0) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "Bitmap extra data is not supported");
            return -ENOTSUP;
        }
        /* A NUL in the name would make it shorter than its entry says,
         * and the directory rewritten at open another size. */
        if (!entry_valid(s, be64_read(e), be32_read(e + 8), flags, e[16],
                         e[17], name_size) ||
            memchr(e + DIR_ENTRY_FIXED, 0, name_size)) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "Bitmap '%.*s' doesn't satisfy the constraints",
                        (int)name_size, (const char *)e + DIR_ENTRY_FIXED);
            return -EINVAL;
        }
        b = g_new0(Qcow2Bitmap, 1);
        b->name = g_strndup((const char *)e + DIR_ENTRY_FIXED, name_size);
        b->granularity_bits = e[17];
        b->on_disk = true;
        b->disk_flags = flags;
        b->table_offset = be64_read(e);
        b->table_size = be32_read(e + 8);
        b->enabled = !!(flags & BME_FLAG_AUTO);
        b->inconsistent = !!(flags & BME_FLAG_IN_USE);
        g_ptr_array_add(list, b);
        pos += esize;
    }
    if (count != bm->nb) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Less bitmaps found than specified in header extension");
        return -EINVAL;
    }
    *out = g_steal_pointer(&list);
    return 0;

broken:
    g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                "Broken bitmap directory");
    return -EINVAL;
}

/* The directory bytes for the entries on disk, in list order. */
static uint8_t *build_directory(Qcow2Bitmaps *bm, uint64_t *size,
                                uint32_t *count)
{
    uint64_t total = 0, pos = 0;
    uint8_t *dir;

    *count = 0;
    for (guint i = 0; i < bm->list->len; i++) {
        Qcow2Bitmap *b = g_ptr_array_index(bm->list, i);
        if (b->on_disk) {
            total += dir_entry_size(strlen(b->name), 0);
            (*count)++;
        }
    }
    dir = g_malloc0(MAX(total, 1));
    for (guint i = 0; i < bm->list->len; i++) {
        Qcow2Bitmap *b = g_ptr_array_index(bm->list, i);
        size_t n = strlen(b->name);
        if (!b->on_disk) {
            continue;
        }
        be64_write(dir + pos, b->table_offset);
        be32_write(dir + pos + 8, b->table_size);
        be32_write(dir + pos + 12, b->disk_flags);
        dir[pos + 16] = BME_TYPE_DIRTY_TRACKING;
        dir[pos + 17] = b->granularity_bits;
        be16_write(dir + pos + 18, n);
        be32_write(dir + pos + 20, 0);
        memcpy(dir + pos + DIR_ENTRY_FIXED, b->name, n);
        pos += dir_entry_size(n, 0);
    }
    *size = total;
    return dir;
}

static int write_header_bit(BlockDriverState *bs, bool set, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;

    if (set) {
        s->autoclear_features |= QCOW2_AUTOCLEAR_BITMAPS;
    } else {
        s->autoclear_features &= ~QCOW2_AUTOCLEAR_BITMAPS;
    }
    return qcow2_write_header(bs, errp);
}

/*
 * Rewrites the directory where it is (same size: only flags changed),
 * with the autoclear bit off meanwhile: a crash in between leaves the
 * extension untrusted, which the next open drops.
 */
static int update_directory_in_place(BlockDriverState *bs, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2Bitmaps *bm = s->bm;
    g_autofree uint8_t *dir = NULL;
    uint64_t size;
    uint32_t count;
    int ret;

    dir = build_directory(bm, &size, &count);
    g_assert(size == bm->dir_size && count == bm->nb);
    ret = write_header_bit(bs, false, errp);
    if (ret < 0) {
        return ret;
    }
    ret = bdrv_pwrite(bs->file, bm->dir_offset, size, dir);
    if (ret == 0) {
        ret = bdrv_flush(bs->file);
    }
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Can't update bitmap directory: %s", g_strerror(-ret));
        return ret;
    }
    return write_header_bit(bs, true, errp);
}

/* ---- tables and bits ---- */

static int read_table(BlockDriverState *bs, Qcow2Bitmap *b, uint64_t **out)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t *t = g_new(uint64_t, b->table_size);
    int ret = bdrv_pread(bs->file, b->table_offset,
                         (int64_t)b->table_size * 8, t);

    for (uint32_t i = 0; ret == 0 && i < b->table_size; i++) {
        uint64_t e = t[i] = GUINT64_FROM_BE(t[i]);
        uint64_t off = e & BME_ENTRY_OFFSET_MASK;
        if ((e & BME_ENTRY_RESERVED_MASK) ||
            (off && ((e & BME_ENTRY_ALL_ONES) ||
                     (off & (s->cluster_size - 1))))) {
            ret = -EINVAL;
        }
    }
    if (ret < 0) {
        g_free(t);
        return ret;
    }
    *out = t;
    return 0;
}

/* Bits past nb_bits stay zero, whatever the last cluster held. */
static void clear_tail(uint8_t *bits, uint64_t nb_bits, uint64_t bytes)
{
    if (nb_bits % 8) {
        bits[nb_bits / 8] &= (1U << (nb_bits % 8)) - 1;
    }
    uint64_t used = (nb_bits + 7) / 8;
    if (bytes > used) {
        memset(bits + used, 0, bytes - used);
    }
}

static int load_bits(BlockDriverState *bs, Qcow2Bitmap *b, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t nb_bits = bits_for(s->size, b->granularity_bits);
    uint64_t bytes = serialized_bytes(nb_bits);
    g_autofree uint64_t *table = NULL;
    uint8_t *bits;
    int ret;

    ret = read_table(bs, b, &table);
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Could not read bitmap_table table from image for "
                    "bitmap '%s': %s", b->name, g_strerror(-ret));
        return ret;
    }
    if (table_entries_for(s, nb_bits) != b->table_size) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Could not read bitmap '%s' from image: %s", b->name,
                    g_strerror(EINVAL));
        return -EINVAL;
    }
    /* g_try: a huge bitmap must fail the open, not abort it; calloc'd
     * pages stay unbacked until a bit is set. */
    bits = g_try_malloc0(MAX(bytes, 1));
    if (!bits) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Could not read bitmap '%s' from image: %s", b->name,
                    g_strerror(ENOMEM));
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < b->table_size; i++) {
        uint64_t at = (uint64_t)i * s->cluster_size;
        uint64_t n = MIN((uint64_t)s->cluster_size, bytes - at);
        uint64_t off = table[i] & BME_ENTRY_OFFSET_MASK;

        if (off) {
            g_autofree uint8_t *buf = g_malloc(s->cluster_size);
            ret = bdrv_pread(bs->file, off, s->cluster_size, buf);
            if (ret < 0) {
                g_free(bits);
                g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                            "Could not read bitmap '%s' from image: %s",
                            b->name, g_strerror(-ret));
                return ret;
            }
            memcpy(bits + at, buf, n);
        } else if (table[i] & BME_ENTRY_ALL_ONES) {
            memset(bits + at, 0xff, n);
        }
    }
    clear_tail(bits, nb_bits, bytes);
    b->bits = bits;
    b->nb_bits = nb_bits;
    return 0;
}

/* Gives the bits the disk's size now: new bits take fill (0 or 1). */
static void resize_bits(Qcow2Bitmap *b, uint64_t disk_size, bool fill)
{
    uint64_t nb = bits_for(disk_size, b->granularity_bits);
    uint64_t old_bytes = serialized_bytes(b->nb_bits);
    uint64_t bytes = serialized_bytes(nb);

    if (nb == b->nb_bits) {
        return;
    }
    b->bits = g_realloc(b->bits, MAX(bytes, 1));
    if (bytes > old_bytes) {
        memset(b->bits + old_bytes, 0, bytes - old_bytes);
    }
    if (fill) {
        for (uint64_t i = b->nb_bits; i < nb; i++) {
            b->bits[i / 8] |= 1U << (i % 8);
        }
    }
    b->nb_bits = nb;
    clear_tail(b->bits, nb, bytes);
}

static void set_bits(Qcow2Bitmap *b, uint64_t first, uint64_t end)
{
    end = MIN(end, b->nb_bits);
    while (first < end && first % 8) {
        b->bits[first / 8] |= 1U << (first % 8);
        first++;
    }
    if (end - first >= 8 && first < end) {
        memset(b->bits + first / 8, 0xff, (end - first) / 8);
        first += (end - first) / 8 * 8;
    }
    while (first < end) {
        b->bits[first / 8] |= 1U << (first % 8);
        first++;
    }
}

static bool all_zero(const uint8_t *p, uint64_t len)
{
    return len == 0 || (p[0] == 0 && memcmp(p, p + 1, len - 1) == 0);
}

static bool test_bit(const Qcow2Bitmap *b, uint64_t i)
{
    return b->bits[i / 8] & (1U << (i % 8));
}

void qcow2_bitmaps_mark(BlockDriverState *bs, uint64_t offset, uint64_t bytes)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2Bitmaps *bm = s->bm;

    if (!bm || !bm->loaded || bytes == 0) {
        return;
    }
    g_mutex_lock(&bm->lock);
    for (guint i = 0; i < bm->list->len; i++) {
        Qcow2Bitmap *b = g_ptr_array_index(bm->list, i);
        if (b->bits && b->enabled) {
            set_bits(b, offset >> b->granularity_bits,
                     ((offset + bytes - 1) >> b->granularity_bits) + 1);
        }
    }
    g_mutex_unlock(&bm->lock);
}

void qcow2_bitmaps_mark_all(BlockDriverState *bs)
{
    qcow2_bitmaps_mark(bs, 0, UINT64_MAX >> 1);
}

/* ---- open ---- */

/*
 * Every consistent bitmap is held in memory while the image is open for
 * writing.  Each may take 512 MiB (QEMU's limit), and an image may list
 * 65535 of them: a hostile directory must not make us touch terabytes.
 * Past this total the open is refused; a read-only open still works.
 */
#define BITMAPS_MAX_MEMORY (4ULL << 30)

static int check_memory(BDRVQcow2State *s, Qcow2Bitmaps *bm, GError **errp)
{
    uint64_t total = 0;

    for (guint i = 0; i < bm->list->len; i++) {
        Qcow2Bitmap *b = g_ptr_array_index(bm->list, i);
        if (!b->inconsistent) {
            total += serialized_bytes(bits_for(s->size, b->granularity_bits));
        }
    }
    if (total > BITMAPS_MAX_MEMORY) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "The persistent bitmaps need %" G_GUINT64_FORMAT " MiB "
                    "of memory, more than the %llu MiB strata allows; open "
                    "the image read-only, or remove bitmaps", total >> 20,
                    BITMAPS_MAX_MEMORY >> 20);
        return -ENOMEM;
    }
    return 0;
}

int qcow2_bitmaps_open(BlockDriverState *bs, int flags, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2Bitmaps *bm = s->bm;
    bool writable = (flags & BDRV_O_RDWR) &&
                    !(flags & (BDRV_O_CHECK | BDRV_O_NO_IO));
    bool mark = false;
    int ret;

    /* check counts the references from the directory on disk itself */
    if (flags & BDRV_O_CHECK) {
        return 0;
    }
    if (bm && bm->nb) {
        GPtrArray *list = NULL;
        ret = read_directory(bs, bm, &list, errp);
        if (ret < 0) {
            return ret;
        }
        g_ptr_array_set_free_func(list, NULL);
        for (guint i = 0; i < bm->list->len; i++) {
            bitmap_free(g_ptr_array_index(bm->list, i));
        }
        g_ptr_array_free(bm->list, TRUE);
        bm->list = list;
    }
    if (!writable) {
        return 0;
    }
    bm = bitmaps_get(s);
    ret = check_memory(s, bm, errp);
    if (ret < 0) {
        return ret;
    }
    for (guint i = 0; i < bm->list->len; i++) {
        Qcow2Bitmap *b = g_ptr_array_index(bm->list, i);
        if (b->inconsistent) {
            continue;
        }
        ret = load_bits(bs, b, errp);
        if (ret < 0) {
            return ret;
        }
        b->disk_flags |= BME_FLAG_IN_USE;
        mark = true;
    }
    bm->loaded = true;
    return mark ? update_directory_in_place(bs, errp) : 0;
}

/* ---- store ---- */

static int alloc_and_write(BlockDriverState *bs, uint64_t bytes,
                           const void *buf, uint64_t *offset)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t n = (bytes + s->cluster_size - 1) / s->cluster_size;
    int64_t off = qcow2_alloc_clusters(bs, n);
    int ret;

    if (off < 0) {
        return (int)off;
    }
    ret = qcow2_overlap_pwrite(bs, 0, off, bytes, buf);
    if (ret < 0) {
        qcow2_update_refcount_range(bs, off, n * s->cluster_size, -1);
        return ret;
    }
    *offset = (uint64_t)off;
    return 0;
}

/* Queues the frees of a table and its data clusters (pointers already
 * gone from the header on disk). */
static void free_table(BlockDriverState *bs, uint64_t table_offset,
                       uint32_t table_size, const uint64_t *table)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t bytes = (uint64_t)table_size * 8;

    for (uint32_t i = 0; table && i < table_size; i++) {
        uint64_t off = table[i] & BME_ENTRY_OFFSET_MASK;
        if (off) {
            /* old bits are worth nothing: their space goes back to the
             * host now, as QEMU discards them */
            bdrv_pdiscard(bs->file, off, s->cluster_size);
            qcow2_free_cluster_deferred(bs, off);
        }
    }
    for (uint64_t c = 0; c < bytes; c += s->cluster_size) {
        qcow2_free_cluster_for(bs, table_offset + c, QCOW2_FREE_OTHER);
    }
}

/* Writes b's bits to new clusters and a new table (QEMU's order: each
 * cluster of bits that has one set, then the table). */
static int store_one(BlockDriverState *bs, Qcow2Bitmap *b,
                     uint64_t *table_offset, uint32_t *table_size)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t bytes = serialized_bytes(b->nb_bits);
    uint32_t n = table_entries_for(s, b->nb_bits);
    g_autofree uint64_t *table = g_new0(uint64_t, MAX(n, 1));
    g_autofree uint8_t *buf = g_malloc(s->cluster_size);
    int ret = 0;

    if (n > BME_MAX_TABLE_SIZE ||
        (uint64_t)n * s->cluster_size > BME_MAX_PHYS_SIZE) {
        return -EFBIG;
    }
    for (uint32_t i = 0; ret == 0 && i < n; i++) {
        uint64_t at = (uint64_t)i * s->cluster_size;
        uint64_t len = MIN((uint64_t)s->cluster_size, bytes - at);
        uint64_t off = 0;

        if (all_zero(b->bits + at, len)) {
            continue;
        }
        memset(buf, 0, s->cluster_size);
        memcpy(buf, b->bits + at, len);
        ret = alloc_and_write(bs, s->cluster_size, buf, &off);
        table[i] = off;
    }
    if (ret == 0) {
        for (uint32_t i = 0; i < n; i++) {
            table[i] = GUINT64_TO_BE(table[i]);
        }
        ret = alloc_and_write(bs, (uint64_t)n * 8, table, table_offset);
        for (uint32_t i = 0; i < n; i++) {
            table[i] = GUINT64_FROM_BE(table[i]);
        }
    }
    if (ret < 0) {
        /* nothing points at what was written: give it back */
        for (uint32_t i = 0; i < n; i++) {
            if (table[i]) {
                qcow2_update_refcount_range(bs, table[i], s->cluster_size,
                                            -1);
            }
        }
        return ret;
    }
    *table_size = n;
    return 0;
}

/* Writes a new directory of the entries on disk and switches the header
 * to it; the old directory's clusters are freed after.  No entries: the
 * extension goes. */
static int replace_directory(BlockDriverState *bs, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2Bitmaps *bm = s->bm;
    uint64_t old_off = bm->dir_offset, old_size = bm->dir_size;
    uint32_t old_nb = bm->nb, count;
    uint64_t size, off = 0;
    g_autofree uint8_t *dir = build_directory(bm, &size, &count);
    int ret = 0;

    if (count > BITMAPS_MAX || size > BITMAP_DIR_MAX) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Bitmap directory is too large");
        return -EINVAL;
    }
    if (count) {
        ret = alloc_and_write(bs, size, dir, &off);
    }
    /* everything the new directory reaches, and its counts, durable
     * before the header points at it */
    if (ret == 0) {
        ret = qcow2_write_back_metadata(bs);
    }
    if (ret == 0) {
        ret = bdrv_flush(bs->file);
    }
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Failed to update bitmap extension: %s",
                    g_strerror(-ret));
        return ret;
    }
    bm->dir_offset = off;
    bm->dir_size = size;
    bm->nb = count;
    ret = write_header_bit(bs, count > 0, errp);
    if (ret < 0) {
        bm->dir_offset = old_off;
        bm->dir_size = old_size;
        bm->nb = old_nb;
        return ret;
    }
    for (uint64_t c = 0; old_size && c < old_size; c += s->cluster_size) {
        qcow2_free_cluster_for(bs, old_off + c, QCOW2_FREE_OTHER);
    }
    return 0;
}

/* A table the new directory no longer points at. */
typedef struct OldTable {
    uint64_t offset;
    uint32_t size;
} OldTable;

int qcow2_bitmaps_store(BlockDriverState *bs, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2Bitmaps *bm = s->bm;
    g_autoptr(GPtrArray) order = NULL;
    g_autoptr(GArray) drops = g_array_new(FALSE, FALSE, sizeof(OldTable));
    GPtrArray *old_tables = g_ptr_array_new_with_free_func(g_free);
    bool any = false;
    int ret = 0;

    if (!bm || !bm->loaded) {
        g_ptr_array_free(old_tables, TRUE);
        return 0;
    }
    /* Bitmaps added in this open go after the directory's, newest
     * first, as QEMU lists them. */
    order = g_ptr_array_new();
    for (guint i = 0; i < bm->list->len; i++) {
        Qcow2Bitmap *b = g_ptr_array_index(bm->list, i);
        if (b->on_disk) {
            g_ptr_array_add(order, b);
        }
    }
    for (guint i = bm->list->len; i-- > 0;) {
        Qcow2Bitmap *b = g_ptr_array_index(bm->list, i);
        if (!b->on_disk) {
            g_ptr_array_add(order, b);
        }
    }
    g_ptr_array_set_size(bm->list, 0);
    for (guint i = 0; i < order->len; i++) {
        g_ptr_array_add(bm->list, g_ptr_array_index(order, i));
    }

    g_rw_lock_writer_lock(&s->free_lock);
    g_mutex_lock(&s->lock);
    for (guint i = 0; ret == 0 && i < bm->list->len; i++) {
        Qcow2Bitmap *b = g_ptr_array_index(bm->list, i);
        uint64_t toff = 0;
        uint32_t tsize = 0;

        if (!b->bits) {
            continue;
        }
        any = true;
        /* a size change no path told us about: unknown bits are dirty */
        resize_bits(b, s->size, true);
        ret = store_one(bs, b, &toff, &tsize);
        if (ret < 0) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                        "Failed to write bitmap '%s' to file: %s", b->name,
                        g_strerror(-ret));
            break;
        }
        if (b->on_disk) {
            OldTable t = { b->table_offset, b->table_size };
            uint64_t *old = NULL;
            /* unreadable old table: its data clusters leak, no more */
            if (read_table(bs, b, &old) < 0) {
                old = NULL;
            }
            g_array_append_val(drops, t);
            g_ptr_array_add(old_tables, old);
        }
        b->on_disk = true;
        b->table_offset = toff;
        b->table_size = tsize;
        b->disk_flags = b->enabled ? BME_FLAG_AUTO : 0;
    }
    if (ret == 0 && any) {
        ret = replace_directory(bs, errp);
    }
    if (ret == 0 && drops->len) {
        for (guint i = 0; i < drops->len; i++) {
            OldTable *t = &g_array_index(drops, OldTable, i);
            free_table(bs, t->offset, t->size,
                       g_ptr_array_index(old_tables, i));
        }
        /* The bitmaps are stored: a failure here leaves the old clusters
         * leaked at most, and the close's own write-back reports it. */
        qcow2_write_back_metadata(bs);
    }
    g_mutex_unlock(&s->lock);
    g_rw_lock_writer_unlock(&s->free_lock);
    g_ptr_array_free(old_tables, TRUE);

    /* Stored or not, the bits leave memory: on failure the directory
     * on disk still says "in use", so nobody trusts them. */
    g_mutex_lock(&bm->lock);
    bm->loaded = false;
    for (guint i = 0; i < bm->list->len; i++) {
        Qcow2Bitmap *b = g_ptr_array_index(bm->list, i);
        g_clear_pointer(&b->bits, g_free);
    }
    g_mutex_unlock(&bm->lock);
    return ret;
}

/* ---- qemu-img bitmap and info ---- */

static Qcow2Bitmap *find_bitmap(Qcow2Bitmaps *bm, const char *name)
{
    for (guint i = 0; bm && i < bm->list->len; i++) {
        Qcow2Bitmap *b = g_ptr_array_index(bm->list, i);
        if (!strcmp(b->name, name)) {
            return b;
        }
    }
    return NULL;
}

int qcow2_bitmap_list(BlockDriverState *bs, GPtrArray **list, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    GPtrArray *out = g_ptr_array_new_with_free_func(
        (GDestroyNotify)bdrv_bitmap_info_free);

    /* What the directory on disk says, as QEMU reports it. */
    for (guint i = 0; s->bm && i < s->bm->list->len; i++) {
        Qcow2Bitmap *b = g_ptr_array_index(s->bm->list, i);
        BdrvBitmapInfo *info;

        if (!b->on_disk) {
            continue;
        }
        info = g_new0(BdrvBitmapInfo, 1);
        info->name = g_strdup(b->name);
        info->granularity = 1U << b->granularity_bits;
        info->in_use = !!(b->disk_flags & BME_FLAG_IN_USE);
        info->auto_ = !!(b->disk_flags & BME_FLAG_AUTO);
        g_ptr_array_add(out, info);
    }
    *list = out;
    return 0;
}

static void set_inconsistent_error(Qcow2Bitmap *b, char **hint,
                                   GError **errp)
{
    g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                "Bitmap '%s' is inconsistent and cannot be used", b->name);
    if (hint) {
        *hint = g_strdup("Try block-dirty-bitmap-remove to delete this "
                         "bitmap from disk");
    }
}

/* QEMU's checks before a new bitmap can be made persistent. */
static bool can_add(BlockDriverState *bs, const BdrvBitmapRequest *req,
                    GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2Bitmaps *bm = bitmaps_get(s);
    int gbits = __builtin_ctz(req->granularity);
    uint64_t nb = 1, dir = dir_entry_size(strlen(req->name), 0);
    const char *why = NULL;
    g_autofree char *buf = NULL;

    if (find_bitmap(bm, req->name)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Bitmap already exists: %s", req->name);
        return false;
    }
    for (guint i = 0; i < bm->list->len; i++) {
        Qcow2Bitmap *b = g_ptr_array_index(bm->list, i);
        nb++;
        dir += dir_entry_size(strlen(b->name), 0);
    }
    uint64_t bytes = (bits_for(s->size, gbits) + 7) / 8;
    if (s->version < 3) {
        why = "Cannot store dirty bitmaps in qcow2 v2 files";
    } else if (gbits > BME_MAX_GRANULARITY_BITS) {
        why = buf = g_strdup_printf("Granularity exceeds maximum (%llu "
                                    "bytes)", 1ULL << BME_MAX_GRANULARITY_BITS);
    } else if (gbits < BME_MIN_GRANULARITY_BITS) {
        why = buf = g_strdup_printf("Granularity is under minimum (%llu "
                                    "bytes)", 1ULL << BME_MIN_GRANULARITY_BITS);
    } else if (bytes > BME_MAX_PHYS_SIZE ||
               bytes > (uint64_t)BME_MAX_TABLE_SIZE * s->cluster_size) {
        why = "Too much space will be occupied by the bitmap. Use larger "
              "granularity";
    } else if (strlen(req->name) > BME_MAX_NAME_SIZE) {
        why = buf = g_strdup_printf("Name length exceeds maximum (%u "
                                    "characters)", BME_MAX_NAME_SIZE);
    } else if (nb > BITMAPS_MAX) {
        why = "Maximum number of persistent bitmaps is already reached";
    } else if (dir > BITMAP_DIR_MAX) {
        why = "Not enough space in the bitmap directory";
    }
    if (why) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Can't make bitmap '%s' persistent in '%s': %s",
                    req->name, bdrv_get_node_name(bs), why);
        return false;
    }
    return true;
}

static int bitmap_add(BlockDriverState *bs, const BdrvBitmapRequest *req,
                      GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2Bitmaps *bm = bitmaps_get(s);
    Qcow2Bitmap *b;

    if (!can_add(bs, req, errp)) {
        return -EINVAL;
    }
    b = g_new0(Qcow2Bitmap, 1);
    b->name = g_strdup(req->name);
    b->granularity_bits = __builtin_ctz(req->granularity);
    b->nb_bits = bits_for(s->size, b->granularity_bits);
    b->bits = g_try_malloc0(MAX(serialized_bytes(b->nb_bits), 1));
    if (!b->bits) {
        bitmap_free(b);
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Could not create bitmap '%s': %s", req->name,
                    g_strerror(ENOMEM));
        return -ENOMEM;
    }
    b->enabled = !req->disabled;
    g_mutex_lock(&bm->lock);
    g_ptr_array_add(bm->list, b);
    g_mutex_unlock(&bm->lock);
    return 0;
}

/*
 * A bitmap on disk goes at once, as in QEMU: a directory without it,
 * the header switched to it, then its clusters freed (and the frees
 * applied, so that the bitmaps stored at close can reuse them).
 */
static int bitmap_remove(BlockDriverState *bs, Qcow2Bitmap *b, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2Bitmaps *bm = s->bm;
    g_autofree uint64_t *table = NULL;
    int ret = 0;

    g_mutex_lock(&bm->lock);
    g_ptr_array_remove(bm->list, b);
    g_mutex_unlock(&bm->lock);
    if (!b->on_disk) {
        bitmap_free(b);
        return 0;
    }
    g_rw_lock_writer_lock(&s->free_lock);
    g_mutex_lock(&s->lock);
    if (read_table(bs, b, &table) < 0) {
        table = NULL;   /* its data clusters leak, no more */
    }
    ret = replace_directory(bs, errp);
    if (ret == 0) {
        free_table(bs, b->table_offset, b->table_size, table);
        ret = qcow2_write_back_metadata(bs);
        if (ret < 0) {
            /* the bitmap is gone; its clusters at worst leak */
            ret = 0;
        }
        bitmap_free(b);
    } else {
        g_mutex_lock(&bm->lock);
        g_ptr_array_add(bm->list, b);
        g_mutex_unlock(&bm->lock);
    }
    g_mutex_unlock(&s->lock);
    g_rw_lock_writer_unlock(&s->free_lock);
    return ret;
}

/* The bits of a bitmap of src (loaded now if its node did not). */
static int source_bits(BlockDriverState *src, Qcow2Bitmap *b,
                       Qcow2Bitmap *copy, GError **errp)
{
    *copy = *b;
    copy->bits = NULL;
    if (b->bits) {
        copy->bits = g_memdup2(b->bits, MAX(serialized_bytes(b->nb_bits), 1));
        return 0;
    }
    return load_bits(src, copy, errp);
}

static int bitmap_merge(BlockDriverState *bs, Qcow2Bitmap *dst,
                        const BdrvBitmapRequest *req, char **hint,
                        GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    BlockDriverState *src_bs = req->src_bs ? req->src_bs : bs;
    BDRVQcow2State *ss;
    Qcow2Bitmap *src, copy;
    int ret;

    if (src_bs->drv != bs->drv ||
        !(src = find_bitmap(((BDRVQcow2State *)src_bs->opaque)->bm,
                            req->src_name))) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Dirty bitmap '%s' not found", req->src_name);
        return -ENOENT;
    }
    ss = src_bs->opaque;
    if (src->inconsistent) {
        set_inconsistent_error(src, hint, errp);
        return -EINVAL;
    }
    if (ss->size != s->size) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Bitmaps are of different sizes (destination size is %"
                    G_GUINT64_FORMAT ", source size is %" G_GUINT64_FORMAT
                    ") and can't be merged", s->size, ss->size);
        return -EINVAL;
    }
    ret = source_bits(src_bs, src, &copy, errp);
    if (ret < 0) {
        return ret;
    }
    g_mutex_lock(&s->bm->lock);
    for (uint64_t i = 0; i < copy.nb_bits; i++) {
        if (test_bit(&copy, i)) {
            uint64_t start = i << copy.granularity_bits;
            uint64_t end = MIN(start + (1ULL << copy.granularity_bits),
                               s->size);
            set_bits(dst, start >> dst->granularity_bits,
                     ((end - 1) >> dst->granularity_bits) + 1);
        }
    }
    g_mutex_unlock(&s->bm->lock);
    g_free(copy.bits);
    return 0;
}

int qcow2_bitmap_modify(BlockDriverState *bs, const BdrvBitmapRequest *req,
                        char **hint, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2Bitmap *b;

    if (req->op == BDRV_BITMAP_ADD) {
        return bitmap_add(bs, req, errp);
    }
    b = find_bitmap(s->bm, req->name);
    if (!b) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Dirty bitmap '%s' not found", req->name);
        return -ENOENT;
    }
    if (!s->bm->loaded) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Bitmap '%s' is readonly and cannot be modified",
                    b->name);
        return -EACCES;
    }
    if (req->op == BDRV_BITMAP_REMOVE) {
        return bitmap_remove(bs, b, errp);
    }
    if (b->inconsistent) {
        set_inconsistent_error(b, hint, errp);
        return -EINVAL;
    }
    switch (req->op) {
    case BDRV_BITMAP_CLEAR:
        g_mutex_lock(&s->bm->lock);
        memset(b->bits, 0, MAX(serialized_bytes(b->nb_bits), 1));
        g_mutex_unlock(&s->bm->lock);
        return 0;
    case BDRV_BITMAP_ENABLE:
    case BDRV_BITMAP_DISABLE:
        g_mutex_lock(&s->bm->lock);
        b->enabled = req->op == BDRV_BITMAP_ENABLE;
        g_mutex_unlock(&s->bm->lock);
        return 0;
    case BDRV_BITMAP_MERGE:
        return bitmap_merge(bs, b, req, hint, errp);
    default:
        g_assert_not_reached();
    }
}

uint64_t qcow2_bitmaps_size(BlockDriverState *bs, uint32_t cluster_size)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t total = 0, dir = 0;

    /* QEMU's estimate: every bitmap fully allocated, its table, and the
     * directory. */
    for (guint i = 0; s->bm && i < s->bm->list->len; i++) {
        Qcow2Bitmap *b = g_ptr_array_index(s->bm->list, i);
        uint64_t bytes = (bits_for(s->size, b->granularity_bits) + 7) / 8;
        uint64_t clusters = (bytes + cluster_size - 1) / cluster_size;

        total += clusters * cluster_size;
        total += qcow2_align_up(clusters * 8, cluster_size);
        dir += dir_entry_size(strlen(b->name), 0);
    }
    return total + qcow2_align_up(dir, cluster_size);
}

/* ---- resize ---- */

int qcow2_bitmaps_can_resize(BlockDriverState *bs, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2Bitmaps *bm = s->bm;

    if (!bm || bm->list->len == 0) {
        return 0;
    }
    if (!bm->loaded) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "Cannot resize qcow2 with persistent bitmaps that were "
                    "not loaded into memory");
        return -ENOTSUP;
    }
    for (guint i = 0; i < bm->list->len; i++) {
        Qcow2Bitmap *b = g_ptr_array_index(bm->list, i);
        if (b->inconsistent) {
            set_inconsistent_error(b, NULL, errp);
            return -ENOTSUP;
        }
    }
    return 0;
}

void qcow2_bitmaps_resized(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2Bitmaps *bm = s->bm;

    if (!bm || !bm->loaded) {
        return;
    }
    /* As QEMU: bits for a grown part start clean. */
    g_mutex_lock(&bm->lock);
    for (guint i = 0; i < bm->list->len; i++) {
        Qcow2Bitmap *b = g_ptr_array_index(bm->list, i);
        if (b->bits) {
            resize_bits(b, s->size, false);
        }
    }
    g_mutex_unlock(&bm->lock);
}

/* ---- check ---- */

int qcow2_bitmaps_count_refs(BlockDriverState *bs,
                             void (*inc)(void *opaque, uint64_t offset,
                                         uint64_t bytes),
                             void *opaque, int *corruptions)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2Bitmaps *bm = s->bm;
    g_autoptr(GPtrArray) list = NULL;
    g_autoptr(GError) err = NULL;

    if (!bm || bm->nb == 0) {
        return 0;
    }
    inc(opaque, bm->dir_offset, bm->dir_size);
    if (read_directory(bs, bm, &list, &err) < 0) {
        (*corruptions)++;
        return 0;
    }
    g_ptr_array_set_free_func(list, (GDestroyNotify)bitmap_free);
    for (guint i = 0; i < list->len; i++) {
        Qcow2Bitmap *b = g_ptr_array_index(list, i);
        g_autofree uint64_t *table = NULL;
        uint64_t *raw;

        inc(opaque, b->table_offset, (uint64_t)b->table_size * 8);
        /* entry by entry: one bad entry must not hide the others */
        raw = g_new(uint64_t, b->table_size);
        if (bdrv_pread(bs->file, b->table_offset,
                       (int64_t)b->table_size * 8, raw) < 0) {
            g_free(raw);
            (*corruptions)++;
            continue;
        }
        table = raw;
        for (uint32_t j = 0; j < b->table_size; j++) {
            uint64_t e = GUINT64_FROM_BE(table[j]);
            uint64_t off = e & BME_ENTRY_OFFSET_MASK;
            if ((e & BME_ENTRY_RESERVED_MASK) ||
                (off && ((e & BME_ENTRY_ALL_ONES) ||
                         (off & (s->cluster_size - 1))))) {
                (*corruptions)++;
                continue;
            }
            if (off) {
                inc(opaque, off, s->cluster_size);
            }
        }
    }
    return 0;
}
