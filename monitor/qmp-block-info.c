/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * query-block and query-named-block-nodes: the typed results (BlockInfo,
 * BlockDeviceInfo, ImageInfo with its snapshots, backing names, qcow2's
 * format-specific facts and the backing image nested unless "flat")
 * filled from the block layer and serialised by the generated
 * qapi_<T>_to_json (schema: qapi/block-core.json).  Also the SnapshotInfo
 * that blockdev-snapshot-delete-internal-sync returns.
 *
 * strata has no I/O throttling and no write threshold: those members are
 * the zeroes QEMU shows when they are off.  Every struct, string and
 * list here is heap-allocated because the generated qapi_free_<T> frees
 * them all.
 */
#include "monitor/monitor-int.h"
#include "block/crypto.h"
#include "block/dirty-bitmap.h"
#include "block/snapshot.h"
#include "blockdev/registry.h"
#include "qapi-gen.h"

#define NSEC_PER_SEC 1000000000LL

SnapshotInfo *qmp_snapshot_info(const BdrvSnapshotInfo *sn)
{
    SnapshotInfo *info = g_new0(SnapshotInfo, 1);

    info->id = g_strdup(sn->id_str);
    info->name = g_strdup(sn->name);
    info->vm_state_size = sn->vm_state_size;
    info->date_sec = sn->date_sec;
    info->date_nsec = sn->date_nsec;
    info->vm_clock_sec = sn->vm_clock_nsec / NSEC_PER_SEC;
    info->vm_clock_nsec = sn->vm_clock_nsec % NSEC_PER_SEC;
    /* QEMU leaves icount out when the snapshot recorded none */
    info->has_icount = sn->icount != BDRV_SNAPSHOT_NO_ICOUNT;
    info->icount = info->has_icount ? sn->icount : 0;
    return info;
}

/* The node's snapshots, or NULL when it has none (QEMU then omits the
 * member). */
static GPtrArray *snapshot_list(BlockDriverState *bs)
{
    BdrvSnapshotInfo *list = NULL;
    int n = bdrv_snapshot_list(bs, &list, NULL);
    GPtrArray *out = NULL;

    if (n > 0) {
        out = g_ptr_array_new();
        for (int i = 0; i < n; i++) {
            g_ptr_array_add(out, qmp_snapshot_info(&list[i]));
        }
    }
    bdrv_snapshot_list_free(list, n > 0 ? n : 0);
    return out;
}

/* The index of name among an enum's values; dflt if it is not one. */
static int enum_index(const QapiType *t, const char *name, int dflt)
{
    for (size_t i = 0; name && i < t->n_values; i++) {
        if (!strcmp(t->values[i], name)) {
            return (int)i;
        }
    }
    return dflt;
}

/* A LUKS header as QEMU's QCryptoBlockInfoLUKS. */
static QCryptoBlockInfoLUKS *luks_description(const LuksInfo *l)
{
    QCryptoBlockInfoLUKS *q = g_new0(QCryptoBlockInfoLUKS, 1);

    q->cipher_alg = enum_index(&qapi_type_QCryptoCipherAlgorithm,
                               l->cipher_alg, 0);
    q->cipher_mode = enum_index(&qapi_type_QCryptoCipherMode,
                                l->cipher_mode, 0);
    q->ivgen_alg = enum_index(&qapi_type_QCryptoIVGenAlgorithm,
                              l->ivgen_alg, 0);
    q->has_ivgen_hash_alg = l->ivgen_hash_alg != NULL;
    q->ivgen_hash_alg = enum_index(&qapi_type_QCryptoHashAlgorithm,
                                   l->ivgen_hash_alg, 0);
    q->hash_alg = enum_index(&qapi_type_QCryptoHashAlgorithm, l->hash_alg,
                             0);
    q->payload_offset = (int64_t)l->payload_offset;
    q->master_key_iters = l->master_key_iters;
    q->uuid = g_strdup(l->uuid);
    q->slots = g_ptr_array_new();
    for (int i = 0; i < 8; i++) {
        QCryptoBlockInfoLUKSSlot *slot = g_new0(QCryptoBlockInfoLUKSSlot, 1);
        slot->active = l->slots[i].active;
        slot->has_iters = slot->has_stripes = slot->active;
        slot->iters = l->slots[i].iters;
        slot->stripes = l->slots[i].stripes;
        slot->key_offset = (int64_t)l->slots[i].key_offset;
        g_ptr_array_add(q->slots, slot);
    }
    return q;
}

/* qcow2's encrypt member: the format, and for LUKS the header. */
static ImageInfoSpecificQCow2Encryption *qcow2_encrypt(
    const BlockSpecificInfo *si)
{
    ImageInfoSpecificQCow2Encryption *e;

    if (!si->encrypt_format || (!strcmp(si->encrypt_format, "luks") &&
                                !si->luks)) {
        return NULL;
    }
    e = g_new0(ImageInfoSpecificQCow2Encryption, 1);
    e->format = enum_index(&qapi_type_BlockdevQcow2EncryptionFormat,
                           si->encrypt_format, 0);
    /* the aes branch has no members: nothing to point at */
    e->u = si->luks ? luks_description(si->luks) : NULL;
    return e;
}

/* The persistent bitmaps, only when there are some (as QEMU). */
static GPtrArray *qcow2_bitmaps(BlockDriverState *bs)
{
    g_autoptr(GPtrArray) list = bdrv_bitmap_list(bs, NULL);
    GPtrArray *out;

    if (!list || list->len == 0) {
        return NULL;
    }
    out = g_ptr_array_new();
    for (guint i = 0; i < list->len; i++) {
        BdrvBitmapInfo *bi = g_ptr_array_index(list, i);
        Qcow2BitmapInfo *q = g_new0(Qcow2BitmapInfo, 1);

        q->name = g_strdup(bi->name);
        q->granularity = bi->granularity;
        q->flags = g_ptr_array_new();
        if (bi->in_use) {
            g_ptr_array_add(q->flags,
                            GINT_TO_POINTER(QCOW2BITMAPINFOFLAGS_IN_USE));
        }
        if (bi->auto_) {
            g_ptr_array_add(q->flags,
                            GINT_TO_POINTER(QCOW2BITMAPINFOFLAGS_AUTO));
        }
        g_ptr_array_add(out, q);
    }
    return out;
}

static ImageInfoSpecific *qcow2_specific(BlockDriverState *bs,
                                         const BlockSpecificInfo *si)
{
    ImageInfoSpecific *spec;
    ImageInfoSpecificQCow2Wrapper *w;
    ImageInfoSpecificQCow2 *q;
    /* QEMU shows the feature bits only for compat 1.1: a 0.10 header has
     * no feature fields to report */
    bool v3 = g_strcmp0(si->compat, "0.10") != 0;

    q = g_new0(ImageInfoSpecificQCow2, 1);
    q->compat = g_strdup(si->compat);
    q->refcount_bits = si->refcount_bits;
    /* a v2 image has no compression type: QEMU's default */
    q->compression_type = enum_index(&qapi_type_Qcow2CompressionType,
                                     si->compression_type,
                                     QCOW2COMPRESSIONTYPE_ZLIB);
    q->has_lazy_refcounts = q->has_corrupt = q->has_extended_l2 = v3;
    q->lazy_refcounts = v3 && si->lazy_refcounts;
    q->corrupt = v3 && si->corrupt;
    q->extended_l2 = v3 && si->extended_l2;
    q->has_data_file = si->data_file != NULL;
    q->data_file = g_strdup(si->data_file);
    q->has_data_file_raw = si->has_data_file_raw;
    q->data_file_raw = si->data_file_raw;
    q->encrypt = qcow2_encrypt(si);
    q->has_encrypt = q->encrypt != NULL;
    q->bitmaps = qcow2_bitmaps(bs);
    q->has_bitmaps = q->bitmaps != NULL;
    w = g_new0(ImageInfoSpecificQCow2Wrapper, 1);
    w->data = q;
    spec = g_new0(ImageInfoSpecific, 1);
    spec->type = IMAGEINFOSPECIFICKIND_QCOW2;
    spec->u = w;
    return spec;
}

static ImageInfoSpecific *format_specific(BlockDriverState *bs)
{
    BlockSpecificInfo si = { 0 };
    ImageInfoSpecific *spec;
    ImageInfoSpecificLUKSWrapper *w;

    bdrv_get_specific_info(bs, &si);
    if (!g_strcmp0(si.type, "qcow2")) {
        return qcow2_specific(bs, &si);
    }
    if (g_strcmp0(si.type, "luks") || !si.luks) {
        return NULL;            /* other formats have no facts to give */
    }
    w = g_new0(ImageInfoSpecificLUKSWrapper, 1);
    w->data = luks_description(si.luks);
    spec = g_new0(ImageInfoSpecific, 1);
    spec->type = IMAGEINFOSPECIFICKIND_LUKS;
    spec->u = w;
    return spec;
}

static void set_backing_names(ImageInfo *info, BlockDriverState *bs)
{
    const char *backing = bdrv_get_backing_filename(bs);
    char *full;

    if (!backing) {
        return;
    }
    info->has_backing_filename = true;
    info->backing_filename = g_strdup(backing);
    full = bdrv_get_full_backing_filename(bs);
    info->has_full_backing_filename = full != NULL;
    info->full_backing_filename = full;
    if (bdrv_get_backing_format(bs)) {
        info->has_backing_filename_format = true;
        info->backing_filename_format = g_strdup(bdrv_get_backing_format(bs));
    }
}

static ImageInfo *image_info(BlockDriverState *bs, bool flat)
{
    ImageInfo *info = g_new0(ImageInfo, 1);
    BlockDriverInfo bdi = { 0 };
    int64_t actual = bdrv_get_allocated_file_size(bs);

    bdrv_get_info(bs, &bdi);
    info->filename = bdrv_get_display_filename(bs);
    info->format = g_strdup(bdrv_get_format_name(bs));
    info->has_encrypted = bdrv_is_encrypted(bs);
    info->encrypted = info->has_encrypted;
    info->has_dirty_flag = true;
    info->dirty_flag = bdi.is_dirty;
    info->has_actual_size = actual >= 0;
    info->actual_size = actual >= 0 ? actual : 0;
    /* QEMU counts lengths in whole sectors: a file of odd size shows
     * rounded up (qemu-img info shows the same) */
    info->virtual_size = (bdrv_getlength(bs) + BDRV_SECTOR_SIZE - 1) &
                         ~(int64_t)(BDRV_SECTOR_SIZE - 1);
    info->has_cluster_size = bdi.cluster_size != 0;
    info->cluster_size = bdi.cluster_size;
    set_backing_names(info, bs);
    info->snapshots = snapshot_list(bs);
    info->has_snapshots = info->snapshots != NULL;
    info->format_specific = format_specific(bs);
    info->has_format_specific = info->format_specific != NULL;
    if (!flat && bdrv_get_backing(bs)) {
        info->has_backing_image = true;
        info->backing_image = image_info(bdrv_get_backing(bs), false);
    }
    return info;
}

BlockDeviceInfo *qmp_block_device_info(BlockDriverState *bs, bool flat)
{
    BlockDeviceInfo *info = g_new0(BlockDeviceInfo, 1);
    BlockDriverState *backing = bdrv_get_backing(bs);

    info->file = bdrv_get_display_filename(bs);
    info->encrypted = bdrv_is_encrypted(bs);
    info->has_node_name = true;
    info->node_name = g_strdup(bdrv_get_node_name(bs));
    info->ro = bdrv_is_read_only(bs);
    info->drv = g_strdup(bdrv_get_format_name(bs));
    /* the backing node's own file name, as QEMU: not the (possibly
     * relative) name the image header records */
    if (backing) {
        info->has_backing_file = true;
        info->backing_file = g_strdup(bdrv_get_filename(backing));
    }
    /* QEMU counts the chain it describes: flat describes no backing
     * image, so the depth is 0 there */
    for (BlockDriverState *b = backing; b && !flat;
         b = bdrv_get_backing(b)) {
        info->backing_file_depth++;
    }
    /* the enums list the same values in the same order */
    G_STATIC_ASSERT((int)BLOCKDEVDETECTZEROESOPTIONS_OFF ==
                    (int)BDRV_DETECT_ZEROES_OFF);
    G_STATIC_ASSERT((int)BLOCKDEVDETECTZEROESOPTIONS_ON ==
                    (int)BDRV_DETECT_ZEROES_ON);
    G_STATIC_ASSERT((int)BLOCKDEVDETECTZEROESOPTIONS_UNMAP ==
                    (int)BDRV_DETECT_ZEROES_UNMAP);
    info->detect_zeroes =
        (BlockdevDetectZeroesOptions)bdrv_get_detect_zeroes(bs);
    info->image = image_info(bs, flat);
    /* writeback is a device's setting; a node (and strata's anonymous
     * devices) always caches writes, as QEMU reports for a bare node */
    info->cache = g_new0(BlockdevCacheInfo, 1);
    info->cache->writeback = true;
    info->cache->direct = bdrv_get_open_flags(bs) & BDRV_O_NOCACHE;
    info->cache->no_flush = bdrv_get_open_flags(bs) & BDRV_O_NO_FLUSH;
    return info;
}

JsonNode *qmp_query_named_block_nodes(
    const q_obj_query_named_block_nodes_arg *args, GError **errp)
{
    g_autoptr(GPtrArray) nodes = blockdev_list_nodes();
    GPtrArray *list = g_ptr_array_new();
    bool flat = args->has_flat && args->flat;
    JsonNode *ret;

    /* newest first, as QEMU lists them */
    for (guint i = nodes->len; i > 0; i--) {
        g_ptr_array_add(list, qmp_block_device_info(
                            g_ptr_array_index(nodes, i - 1), flat));
    }
    ret = qapi_BlockDeviceInfoList_to_json(list);
    qapi_free_BlockDeviceInfoList(list);
    return ret;
}

/*
 * QEMU lists the block backends that have a name or a guest device.  The
 * devices blockdev-add gives strata's nodes are anonymous and there are
 * no guest devices, so in strata-daemon, as in qemu-storage-daemon, the
 * list is empty; a named device (made through the library) appears as a
 * backend without a device model: removable, not locked, no tray.
 */
static BlockInfo *block_info(BlockBackend *blk)
{
    BlockInfo *info = g_new0(BlockInfo, 1);
    BlockDriverState *bs = blk_bs(blk);

    info->device = g_strdup(blk_name(blk));
    info->type = g_strdup("unknown");
    info->removable = true;
    if (bs) {
        info->has_inserted = true;
        info->inserted = qmp_block_device_info(bs, false);
    }
    return info;
}

JsonNode *qmp_query_block(GError **errp)
{
    g_autoptr(GPtrArray) devs = blockdev_list_devices();
    GPtrArray *list = g_ptr_array_new();
    JsonNode *ret;

    for (guint i = 0; i < devs->len; i++) {
        BlockBackend *blk = g_ptr_array_index(devs, i);

        if (*blk_name(blk)) {
            g_ptr_array_add(list, block_info(blk));
        }
    }
    ret = qapi_BlockInfoList_to_json(list);
    qapi_free_BlockInfoList(list);
    return ret;
}
