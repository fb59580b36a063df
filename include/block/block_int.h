/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What drivers see: the BlockDriver vtable, the BlockDriverState node, and
 * the helpers drivers use to open children and register themselves.
 */
#ifndef STRATA_BLOCK_INT_H
#define STRATA_BLOCK_INT_H

#include "block/block.h"
#include "block/dirty-bitmap.h"
#include "block/snapshot.h"

G_BEGIN_DECLS

struct BlockDriver {
    const char *format_name;
    size_t instance_size;        /* bytes of bs->opaque */
    bool is_protocol;            /* talks to the host (file), has no file child */
    /* A protocol whose length is a device's: truncate never changes it
     * (a format above passes a resize through exactly, and then refuses
     * one to another length), and areas not written read what the device
     * held before, not zeroes. */
    bool fixed_length;
    bool supports_backing;
    /* Passes the content of its file child through unchanged (blkdebug):
     * the layer below it in a backing chain is that child's backing. */
    bool is_filter;
    /* Makes no images of its own (nbd): a format's create writes into the
     * node as it is, which must be long enough (see create-target.c). */
    bool creates_in_place;

    /* Score 0..100 that buf (the file's first bytes) is this format. */
    int (*probe)(const uint8_t *buf, int buf_size, const char *filename);

    /* Opens bs; a format driver opens its own file child with
     * bdrv_open_file_child().  Consumes the options it knows. */
    int (*open)(BlockDriverState *bs, BlockOpts *options, int flags,
                GError **errp);
    void (*close)(BlockDriverState *bs);
    bool (*create)(const char *filename, BlockOpts *opts, GError **errp);
    /* Called before the node becomes read-only or read-write; a format
     * writes back its caches before going read-only. */
    int (*reopen)(BlockDriverState *bs, bool read_only, GError **errp);
    /* Changes runtime options (qemu-io's reopen -o) of a drained node:
     * takes the keys it knows out of opts; with commit false it only
     * validates them, with commit true it applies them.  On error,
     * errp is set and nothing changed. */
    int (*reopen_options)(BlockDriverState *bs, BlockOpts *opts, bool commit,
                          GError **errp);
    /* The VM state area (savevm; qemu-io read/write -b): size bytes at
     * pos of it; 0 or -errno. */
    int (*save_vmstate)(BlockDriverState *bs, const void *buf, int64_t pos,
                        int64_t size);
    int (*load_vmstate)(BlockDriverState *bs, void *buf, int64_t pos,
                        int64_t size);

    /* Requests arrive aligned to bs->request_alignment (offset and length,
     * except the length of a request that ends at EOF) and with buffers
     * aligned to bs->buf_alignment. */
    int (*pread)(BlockDriverState *bs, int64_t offset, int64_t bytes,
                 void *buf);
    int (*pwrite)(BlockDriverState *bs, int64_t offset, int64_t bytes,
                  const void *buf);
    int (*pwrite_zeroes)(BlockDriverState *bs, int64_t offset, int64_t bytes,
                         int flags);
    /* Stores the data compressed (QEMU: BDRV_REQ_WRITE_COMPRESSED); the
     * driver says which requests are valid (qcow2: whole clusters). */
    int (*pwrite_compressed)(BlockDriverState *bs, int64_t offset,
                             int64_t bytes, const void *buf);
    int (*pdiscard)(BlockDriverState *bs, int64_t offset, int64_t bytes);
    /* Optional (bdrv_aio_submit): aio arrives checked and aligned; the
     * driver calls aio->cb once, or returns -errno and never calls it.
     * aio_supported, if set, says whether this node takes any (raw: only
     * when its file does). */
    int (*aio_submit)(BlockDriverState *bs, BdrvAio *aio);
    bool (*aio_supported)(BlockDriverState *bs);
    int (*flush)(BlockDriverState *bs);
    int (*truncate)(BlockDriverState *bs, int64_t size, GError **errp);
    /* Resize with a preallocation mode (BdrvPreallocMode); drivers
     * without it get truncate for BDRV_PREALLOC_OFF only. */
    int (*truncate_prealloc)(BlockDriverState *bs, int64_t size,
                             int prealloc, GError **errp);
    /* qemu-img amend: changes the options set in opts (names as for
     * create); force as QEMU's --force. */
    int (*amend)(BlockDriverState *bs, BlockOpts *opts, bool force,
                 BdrvAmendStatusCB *status_cb, void *cb_opaque,
                 GError **errp);
    int64_t (*getlength)(BlockDriverState *bs);
    int64_t (*get_allocated_file_size)(BlockDriverState *bs);
    int (*block_status)(BlockDriverState *bs, int64_t offset, int64_t bytes,
                        int64_t *pnum, int64_t *map, BlockDriverState **file);
    int (*get_info)(BlockDriverState *bs, BlockDriverInfo *bdi);
    void (*get_specific_info)(BlockDriverState *bs, BlockSpecificInfo *info);
    int (*check)(BlockDriverState *bs, BdrvCheckResult *res,
                 BdrvCheckMode fix);
    /* Optional: whether node is a child of bs beyond file and backing
     * (qcow2's data file), so that it is not deleted under bs. */
    bool (*has_child)(BlockDriverState *bs, BlockDriverState *node);

    /* Backing chains (block/backing.c calls these on a drained node). */
    /* Records a new backing file name and format in the image (NULL name:
     * no backing file) with one header write, and updates
     * bs->backing_file / bs->backing_format to match. */
    int (*change_backing_file)(BlockDriverState *bs, const char *backing_file,
                               const char *backing_fmt, GError **errp);
    /* Drops all data of the active layer, so every read goes to the
     * backing file (qemu-img commit empties the committed image). */
    int (*make_empty)(BlockDriverState *bs, GError **errp);

    /* Persistent dirty bitmaps (include/block/dirty-bitmap.h), optional:
     * the list as stored, one qemu-img bitmap action (request already
     * validated by the generic layer; hint: a line to print after the
     * error), and what they would take in a qcow2 image (measure). */
    int (*bitmap_list)(BlockDriverState *bs, GPtrArray **list,
                       GError **errp);
    int (*bitmap_modify)(BlockDriverState *bs, const BdrvBitmapRequest *req,
                         char **hint, GError **errp);
    uint64_t (*bitmaps_size)(BlockDriverState *bs, uint32_t cluster_size);
    bool (*supports_bitmaps)(BlockDriverState *bs);

    /*
     * Internal snapshots, in the phases of include/block/snapshot.h,
     * whose generic layer enforces their order, the drain and the busy
     * rule before calling these.  A check validates without writing and
     * returns 0 with *op set to the driver's own operation and *info
     * describing the snapshot concerned, or -errno with errp set; it
     * sees every operation checked on bs before it.  do may update
     * *info (a create's date and size as taken); the other phases take
     * the op, and clean frees it whatever its state.
     */
    int (*snapshot_list)(BlockDriverState *bs, BdrvSnapshotInfo **list,
                         GError **errp);
    int (*snapshot_create_check)(BlockDriverState *bs,
                                 const BdrvSnapshotInfo *tmpl, int flags,
                                 BdrvSnapshotInfo *info, void **op,
                                 GError **errp);
    int (*snapshot_delete_check)(BlockDriverState *bs, const char *id,
                                 const char *name, BdrvSnapshotInfo *info,
                                 void **op, GError **errp);
    int (*snapshot_goto_check)(BlockDriverState *bs, const char *id,
                               const char *name, BdrvSnapshotInfo *info,
                               void **op, GError **errp);
    /* optional: work before the drain, guest I/O running (issue 15) */
    int (*snapshot_pre_do)(BlockDriverState *bs, void *op, GError **errp);
    void (*snapshot_pre_cancel)(BlockDriverState *bs, void *op);
    int (*snapshot_do)(BlockDriverState *bs, void *op, BdrvSnapshotInfo *info,
                       GError **errp);
    int (*snapshot_invalidate)(BlockDriverState *bs, void *op, GError **errp);
    int (*snapshot_cancel)(BlockDriverState *bs, void *op, GError **errp);
    int (*snapshot_clean)(BlockDriverState *bs, void *op, GError **errp);
    /* optional (issue 14): the header bytes invalidate will write, at
     * most 64 (bdrv_snapshot_op_publish_bytes) */
    int (*snapshot_publish_bytes)(BlockDriverState *bs, void *op,
                                  uint64_t *offset, uint32_t *len,
                                  uint8_t *new_bytes, bool *synced);
    int (*snapshot_load_tmp)(BlockDriverState *bs, const char *id,
                             const char *name, GError **errp);

    /* Image locking (see block/perm.c): takes the permissions `perm` and
     * refuses to others what is not in `shared` (BLK_PERM_* masks), or
     * fails with errp set and nothing changed.  Only nodes that talk to
     * the host implement it; the generic layer passes a node's
     * permissions on to its file child. */
    int (*set_perm)(BlockDriverState *bs, uint64_t perm, uint64_t shared,
                    GError **errp);

    /* Fault injection: a format announces named points of its metadata
     * updates to its file child with bdrv_debug_event(); the blkdebug
     * filter can fail the request that follows one. */
    void (*debug_event)(BlockDriverState *bs, const char *event);
};

/* One in-flight request, tracked so RMW writes can serialise. */
typedef struct BdrvTrackedRequest {
    int64_t offset;
    int64_t bytes;
    bool serialising;
    struct BdrvTrackedRequest *next;
} BdrvTrackedRequest;

struct BlockDriverState {
    char *node_name;
    char *filename;              /* the name the node was opened with */
    BlockDriver *drv;
    void *opaque;
    BlockDriverState *file;      /* protocol child under a format */
    BlockDriverState *backing;   /* backing child, read-only */
    char *backing_file;          /* backing name recorded in the image */
    char *backing_format;        /* backing format recorded, or NULL */
    int open_flags;
    bool read_only;
    gint refcnt;
    /* detect-zeroes: a write of zeroes becomes a zero write (may unmap
     * with BDRV_DETECT_ZEROES_UNMAP); this node only, as in QEMU */
    BdrvDetectZeroes detect_zeroes;

    uint32_t request_alignment;  /* set by open; 1 if byte granular */
    uint32_t buf_alignment;      /* memory alignment of buffers */

    /* In-flight tracking and drain (all under lock). */
    GMutex lock;
    GCond cond;
    int in_flight;
    int waiters;                 /* threads in g_cond_wait on cond */
    int quiesce_counter;
    GThread *drain_owner;
    BdrvTrackedRequest *tracked;

    /* Why operations that change the image are refused (a block job
     * uses the node): reasons added by block/blockjob.c, under lock. */
    GPtrArray *op_blockers;
};

static inline void bdrv_debug_event(BlockDriverState *bs, const char *event)
{
    if (bs && bs->drv && bs->drv->debug_event) {
        bs->drv->debug_event(bs, event);
    }
}

/* Registration: one line per driver in block/drivers.c. */
void bdrv_register(BlockDriver *drv);

/* Opens the "file" child of a format node from options' "file.*" keys or
 * filename, honouring flags (read-only, O_DIRECT). */
BlockDriverState *bdrv_open_file_child(const char *filename,
                                       BlockOpts *options, int flags,
                                       GError **errp);
/* The same for the child whose options are "<name>.*" (qcow2's
 * "data-file"); the driver defaults to "file". */
BlockDriverState *bdrv_open_named_child(const char *filename,
                                        BlockOpts *options, const char *name,
                                        int flags, GError **errp);
/* Opens the backing chain of bs from its recorded backing_file /
 * backing_format or the "backing" option.  Always read-only. */
bool bdrv_open_backing(BlockDriverState *bs, BlockOpts *options, int flags,
                       GError **errp);
/* Directory-relative resolution of a backing name, like QEMU. */
char *bdrv_resolve_backing_name(const char *overlay_filename,
                                const char *backing_name);

/*
 * Permissions a user holds on a node and which it shares with other users
 * (QEMU 7.2's BLK_PERM_* bits; the file driver turns them into the byte
 * locks QEMU takes, so both refuse each other's conflicting writers).
 */
#define BLK_PERM_CONSISTENT_READ 0x01
#define BLK_PERM_WRITE           0x02
#define BLK_PERM_WRITE_UNCHANGED 0x04
#define BLK_PERM_RESIZE          0x08
#define BLK_PERM_ALL             0x0f
/* Names as QEMU prints them in "Failed to get \"%s\" lock". */
const char *bdrv_perm_name(uint64_t one_perm);
/* Reads "force-share" from options into BDRV_O_FORCE_SHARE in *flags and
 * refuses it on a writable open. */
bool bdrv_perm_parse_options(BlockOpts *options, int *flags, GError **errp);
/* What a user that opened a node with `flags` holds and shares (a tool,
 * a device; also what an overlay asks of its backing node, which is opened
 * read-only).  The file driver takes these at open. */
void bdrv_perm_for_user(int flags, uint64_t *perm, uint64_t *shared);
/* Gives bs (and through it its file child) the permissions of a user that
 * opened it with `flags`: at open, and before/after a reopen. */
bool bdrv_perm_apply(BlockDriverState *bs, int flags, GError **errp);

/* The maximum backing chain depth opened. */
#define BDRV_MAX_CHAIN_DEPTH 64

G_END_DECLS

#endif
