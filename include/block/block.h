/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The generic block layer API: open nodes, do I/O on them, drain them.
 * Everything a tool or a hypervisor needs to use a node, without knowing
 * which driver is behind it.  Drivers see include/block/block_int.h.
 *
 * Conventions: functions that a caller wants a message from take
 * GError **errp; the I/O path returns 0 or -errno.
 */
#ifndef STRATA_BLOCK_H
#define STRATA_BLOCK_H

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

G_BEGIN_DECLS

typedef struct BlockDriverState BlockDriverState;
typedef struct BlockDriver BlockDriver;

#define BDRV_SECTOR_SIZE 512

/* Error domain of the block layer; codes map to QMP error classes. */
#define BDRV_ERROR bdrv_error_quark()
GQuark bdrv_error_quark(void);
typedef enum {
    BDRV_ERROR_GENERIC,        /* QMP GenericError */
    BDRV_ERROR_NOT_FOUND,      /* QMP DeviceNotFound */
    BDRV_ERROR_NOT_SUPPORTED,  /* the driver lacks the feature */
    BDRV_ERROR_IO,             /* an I/O error; message has strerror */
    BDRV_ERROR_TOO_LARGE,      /* a file cannot be that large (EFBIG) */
} BdrvErrorCode;

/* Open flags */
#define BDRV_O_RDWR        0x0002
#define BDRV_O_NOCACHE     0x0020 /* cache.direct=on: O_DIRECT on the file */
#define BDRV_O_NO_BACKING  0x0100 /* do not open the backing chain */
#define BDRV_O_CHECK       0x1000 /* opened by check: tolerate what check reports */
#define BDRV_O_NO_FLUSH    0x0200 /* cache.no-flush=on: flush is a no-op */
/* force-share=on (-U): a read-only open that lets others hold any
 * permission, so it ignores their image locks (refused on writable opens) */
#define BDRV_O_FORCE_SHARE 0x4000
/* The user lets nobody else write or resize the image while it reads
 * (qemu-img convert's sources) */
#define BDRV_O_NO_SHARE    0x8000
/* Set by the generic layer, only in the flags a format driver's open
 * receives, when the format was probed rather than named; callers' own
 * use of it is ignored.  A probed raw node restricts writes to block 0. */
#define BDRV_O_PROBED      0x80000
/* The node is opened only to describe it (qemu-img info): no guest data
 * is read, so a format opens no files beyond its own (a qcow2 data
 * file), and an untrusted image cannot make us open one (QEMU's value). */
#define BDRV_O_NO_IO       0x10000
/* discard=ignore: discards are dropped (a success), the zero writes the
 * node's parents ask of it keep their clusters allocated, and a qcow2
 * node's pass-discard-request defaults to off.  The node's children
 * unmap unless told otherwise, as in QEMU.  QEMU's flag means the
 * opposite (BDRV_O_UNMAP); ours is clear by default because QEMU's tools
 * open with unmap, and blockdev-add, whose default is ignore, sets it. */
#define BDRV_O_IGNORE_DISCARD 0x20000

/* The node option detect-zeroes (QEMU's names and values). */
typedef enum BdrvDetectZeroes {
    BDRV_DETECT_ZEROES_OFF,
    BDRV_DETECT_ZEROES_ON,
    BDRV_DETECT_ZEROES_UNMAP,
} BdrvDetectZeroes;

/*
 * Options are flat string maps with QEMU's dotted keys: "driver",
 * "node-name", "file.filename", "cache.direct", "backing" (a node-name, or
 * "" / "null" for no backing), "snapshot.name", "read-only"...
 * Create one with bdrv_opts_new(); free with g_hash_table_unref().
 */
typedef GHashTable BlockOpts;
BlockOpts *bdrv_opts_new(void);
/* Parses "key=value,key2=value2" (",," escapes a comma) into opts.  A bare
 * word with no '=' is stored under implied_key if that is non-NULL. */
bool bdrv_opts_parse(BlockOpts *opts, const char *str, const char *implied_key,
                     GError **errp);
void bdrv_opts_set(BlockOpts *opts, const char *key, const char *value);
const char *bdrv_opts_get(BlockOpts *opts, const char *key);
/* Removes key and returns its value (caller frees), NULL if absent. */
char *bdrv_opts_take(BlockOpts *opts, const char *key);
/* "on"/"off"/"true"/"false"; returns false and sets errp if unparsable. */
bool bdrv_opts_get_bool(BlockOpts *opts, const char *key, bool def,
                        bool *out, GError **errp);
bool bdrv_opts_get_size(BlockOpts *opts, const char *key, uint64_t def,
                        uint64_t *out, GError **errp);
/* QEMU's number options: an unsigned 64-bit integer in C syntax (decimal,
 * 0x hex, 0 octal), nothing after it; a leading minus wraps around as in
 * strtoull, so "-1" reads as UINT64_MAX. */
bool bdrv_opts_get_number(BlockOpts *opts, const char *key, uint64_t def,
                          uint64_t *out, GError **errp);
/* Moves every "prefix.x" key into a new map as "x". */
BlockOpts *bdrv_opts_extract_prefix(BlockOpts *opts, const char *prefix);
/* Fails naming the first key left over (an option nobody consumed). */
bool bdrv_opts_check_empty(BlockOpts *opts, GError **errp);

/* Parses sizes like "64M", "1G", "512", "1.5k" (qemu-img's suffixes). */
bool strata_parse_size(const char *str, uint64_t *out);

/*
 * Opens filename (may be NULL when options carry "file.filename").
 * The file driver takes QEMU's image locks (option file.locking=on|off|auto);
 * when another process holds a conflicting one, the open fails with QEMU's
 * message plus a hint line: "Failed to get \"write\" lock\nIs another
 * process using the image [NAME]?" (a program that shows one line, such as
 * a QMP reply, keeps the text before the newline).
 * options may be NULL; it is consumed (unref'd) by the call.  The format is
 * options' "driver", else probed from the file's contents.
 */
BlockDriverState *bdrv_open(const char *filename, BlockOpts *options,
                            int flags, GError **errp);
void bdrv_ref(BlockDriverState *bs);
void bdrv_unref(BlockDriverState *bs);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(BlockDriverState, bdrv_unref)

/* The driver's runtime options in opts (the keys it knows are taken out
 * of opts): validated only (commit false) or applied (commit true). */
bool bdrv_reopen_options(BlockDriverState *bs, BlockOpts *opts, bool commit,
                         GError **errp);
/* The VM state area of a node (the format's, else its file child's):
 * 0 or -errno (-ENOTSUP where no driver has one). */
int bdrv_save_vmstate(BlockDriverState *bs, const void *buf, int64_t pos,
                      int64_t size);
int bdrv_load_vmstate(BlockDriverState *bs, void *buf, int64_t pos,
                      int64_t size);
/* Reopens the node (and not its backing chain) read-only or read-write. */
bool bdrv_reopen_set_read_only(BlockDriverState *bs, bool read_only,
                               GError **errp);

/* Creates an image file.  opts carry size, cluster_size, backing_file... */
bool bdrv_create(const char *fmt, const char *filename, BlockOpts *opts,
                 GError **errp);
BlockDriver *bdrv_find_format(const char *format_name);
/*
 * Probing, as QEMU does it: the first BDRV_PROBE_BUF_SIZE bytes of the
 * file (zeroes past its end) are shown to every format's probe and the
 * highest score wins, the first registered on a tie; raw scores 1 on
 * anything.  Returns NULL only if no format scores.
 */
#define BDRV_PROBE_BUF_SIZE 512
BlockDriver *bdrv_probe_all(const uint8_t *buf, int buf_size,
                            const char *filename);
/* The name of a format QEMU 7.2 would probe buf as that strata has no
 * driver for (vmdk, qcow, qed, vdi, vpc, vhdx, parallels, luks, bochs,
 * cloop), or NULL.  Used to keep such headers out of guarded raw images. */
const char *bdrv_probe_foreign(const uint8_t *buf, int size);
/* NULL-terminated list of registered format names (static storage). */
const char *const *bdrv_format_names(void);

/* Accessors */
const char *bdrv_get_node_name(BlockDriverState *bs);
const char *bdrv_get_filename(BlockDriverState *bs);
/* The name QEMU shows for the node (info, QMP): its file name, or for a
 * node opened with a key its options, json:{key, driver, file: {driver,
 * filename}} (QEMU names a node by its options when they say more than
 * a file name can).  Free with g_free. */
char *bdrv_get_display_filename(BlockDriverState *bs);
/* The node holds an encrypted image (qcow2 AES or LUKS, luks). */
bool bdrv_is_encrypted(BlockDriverState *bs);
const char *bdrv_get_format_name(BlockDriverState *bs);
bool bdrv_is_read_only(BlockDriverState *bs);
int bdrv_get_open_flags(BlockDriverState *bs);             /* BDRV_O_* */
BdrvDetectZeroes bdrv_get_detect_zeroes(BlockDriverState *bs);
BlockDriverState *bdrv_get_file(BlockDriverState *bs);     /* protocol child */
BlockDriverState *bdrv_get_backing(BlockDriverState *bs);  /* backing child */
/* child is bs's file child or another child its driver holds (qcow2's
 * data file); the backing child does not count. */
bool bdrv_has_data_child(BlockDriverState *bs, BlockDriverState *child);
/* The next layer of the backing chain: bs's backing child, or for a filter
 * node (blkdebug) the backing child of the node it filters. */
BlockDriverState *bdrv_backing_below(BlockDriverState *bs);
/* The file name that relative names next to bs (its backing file) are
 * taken against: bs's own or, for a node named by options, its file
 * child's, recursively; NULL if none. */
const char *bdrv_naming_filename(BlockDriverState *bs);
/* The backing file name as recorded in the image, or NULL. */
const char *bdrv_get_backing_filename(BlockDriverState *bs);
/* The backing name resolved against the image's directory, or NULL. */
char *bdrv_get_full_backing_filename(BlockDriverState *bs);
const char *bdrv_get_backing_format(BlockDriverState *bs);
BlockDriverState *bdrv_find_node(const char *node_name);
/* Every open node, oldest first, each with a reference taken (the array
 * drops them when freed).  For blockdev/'s registry. */
GPtrArray *bdrv_list_nodes(void);

/* Virtual size in bytes, or -errno. */
int64_t bdrv_getlength(BlockDriverState *bs);
/* Bytes used on the host by this node and its file children, or -errno. */
int64_t bdrv_get_allocated_file_size(BlockDriverState *bs);

/*
 * I/O.  Byte granular: alignment required by the driver below is handled
 * here (read-modify-write of partial blocks).  Thread-safe: any number of
 * threads may issue requests on one node at once.  Return 0 or -errno.
 */
#define BDRV_REQ_MAY_UNMAP   0x1  /* zeroes may deallocate */
#define BDRV_REQ_NO_FALLBACK 0x2  /* fail with -ENOTSUP rather than write zeroes */
int bdrv_pread(BlockDriverState *bs, int64_t offset, int64_t bytes, void *buf);
int bdrv_pwrite(BlockDriverState *bs, int64_t offset, int64_t bytes,
                const void *buf);
int bdrv_pwrite_zeroes(BlockDriverState *bs, int64_t offset, int64_t bytes,
                       int flags);
/* A device's zero write to its root node: as above, but the root's
 * discard=ignore does not take BDRV_REQ_MAY_UNMAP away (QEMU takes it
 * away only on the requests a node makes of its children), so a qcow2
 * root still unmaps its clusters and only its file's punch is dropped. */
int bdrv_pwrite_zeroes_root(BlockDriverState *bs, int64_t offset,
                            int64_t bytes, int flags);
/* Compressed write (qemu-img convert -c, qemu-io write -c); -ENOTSUP if
 * the driver cannot compress.  bytes == 0 is the end-of-copy signal. */
int bdrv_pwrite_compressed(BlockDriverState *bs, int64_t offset,
                           int64_t bytes, const void *buf);
bool bdrv_driver_can_compress(BlockDriver *drv);

/*
 * Asynchronous reads and writes, where the driver queues requests itself
 * (rbd, also under a raw node that was not probed): a caller keeps many
 * requests in flight from one thread, as QEMU's event loop does, instead
 * of one blocked thread per request.  bdrv_aio_submit returns 0 and
 * aio->cb then runs exactly once, on whatever thread the driver finishes
 * in; or it returns -errno and cb never runs.  -ENOTSUP means "not this
 * node, not this request or not now: use bdrv_pread/bdrv_pwrite"; "not
 * now" is a drain by another thread, which the synchronous call waits
 * for and the submitter never does.  The node counts the request in
 * flight until cb, so a drain waits for it.  *aio must stay valid until
 * cb.
 */
typedef enum { BDRV_AIO_READ, BDRV_AIO_WRITE } BdrvAioOp;
typedef struct BdrvAio BdrvAio;
struct BdrvAio {
    BdrvAioOp op;
    int64_t offset;
    int64_t bytes;
    void *buf;
    void (*cb)(BdrvAio *aio, int ret);
    void *opaque;
};
bool bdrv_aio_supported(BlockDriverState *bs);
int bdrv_aio_submit(BlockDriverState *bs, BdrvAio *aio);

int bdrv_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes);
/* bdrv_pread that first copies what it reads from bs's backing chain
 * into bs, whole clusters (copy-on-read); 0 or -errno. */
int bdrv_pread_copy_on_read(BlockDriverState *bs, int64_t offset,
                            int64_t bytes, void *buf);
int bdrv_flush(BlockDriverState *bs);
int bdrv_truncate(BlockDriverState *bs, int64_t size, GError **errp);

/*
 * Resize with preallocation of the added area (qemu-img resize
 * --preallocation; QEMU's PreallocMode).  Growing over a longer backing
 * file makes the new area read zeroes, not the backing data, as QEMU
 * does.  A driver without the truncate_prealloc hook takes only OFF.
 */
typedef enum {
    BDRV_PREALLOC_OFF,
    BDRV_PREALLOC_METADATA,
    BDRV_PREALLOC_FALLOC,
    BDRV_PREALLOC_FULL,
} BdrvPreallocMode;
/* "off", "metadata", "falloc", "full" -> mode; -1 for anything else. */
int bdrv_prealloc_parse(const char *name);
const char *bdrv_prealloc_name(BdrvPreallocMode mode);
int bdrv_truncate_prealloc(BlockDriverState *bs, int64_t size,
                           BdrvPreallocMode prealloc, GError **errp);

/* qemu-img amend: whether the node's format can, and doing it (drained;
 * opts holds creation option names: compat, lazy_refcounts, size...). */
typedef void BdrvAmendStatusCB(BlockDriverState *bs, int64_t done,
                               int64_t total, void *opaque);
bool bdrv_supports_amend(BlockDriverState *bs);
/* status_cb (may be NULL) hears how far a long step (a downgrade's
 * zero-cluster expansion) is: done of total units. */
int bdrv_amend(BlockDriverState *bs, BlockOpts *opts, bool force,
               BdrvAmendStatusCB *status_cb, void *cb_opaque,
               GError **errp);

/*
 * Allocation status of [offset, offset+bytes): returns a mask of
 * BDRV_BLOCK_* (or -errno) valid for *pnum bytes (> 0 unless at EOF).
 * With OFFSET_VALID, *map is the host offset in *file.
 */
#define BDRV_BLOCK_DATA         0x01 /* reads come from this layer's data */
#define BDRV_BLOCK_ZERO         0x02 /* reads return zeroes */
#define BDRV_BLOCK_OFFSET_VALID 0x04 /* *map and *file are set */
#define BDRV_BLOCK_ALLOCATED    0x10 /* this layer decides the content */
#define BDRV_BLOCK_COMPRESSED   0x20
int bdrv_block_status(BlockDriverState *bs, int64_t offset, int64_t bytes,
                      int64_t *pnum, int64_t *map, BlockDriverState **file);
/* Same, following the backing chain for unallocated parts; *depth is the
 * number of layers descended (0 = bs itself). */
int bdrv_block_status_above(BlockDriverState *bs, int64_t offset,
                            int64_t bytes, int64_t *pnum, int64_t *map,
                            BlockDriverState **file, int *depth);

/*
 * Drain: waits until no request is in flight on bs and holds new ones
 * until the matching drained_end.  Requests issued by the thread that
 * drained pass through (it needs to work on the quiet node).  Nests.
 */
void bdrv_drained_begin(BlockDriverState *bs);
void bdrv_drained_end(BlockDriverState *bs);
/* True if the calling thread holds bs drained. */
bool bdrv_is_drained(BlockDriverState *bs);

/*
 * Operation blockers (QEMU's op blockers, one kind): while a node has a
 * reason, operations that change its image or graph (snapshots) refuse
 * it with "Node '<name>' is busy: <reason>".  reason is the caller's
 * string and must live until it is removed.
 */
void bdrv_op_block(BlockDriverState *bs, const char *reason);
void bdrv_op_unblock(BlockDriverState *bs, const char *reason);
bool bdrv_op_is_blocked(BlockDriverState *bs, GError **errp);

/* True if pred is true for an open node (any node, formats and files
 * alike); stops at the first.  pred runs under the node list's lock: it
 * may read the node's fields, copy what it needs to opaque and call
 * stat(), nothing that opens or finds nodes. */
typedef bool BdrvNodePredicate(BlockDriverState *bs, void *opaque);
bool bdrv_any_node(BdrvNodePredicate *pred, void *opaque);

/* Facts about a format node, for info/check/convert. */
typedef struct BlockDriverInfo {
    int cluster_size;          /* 0 if the format has no clusters */
    bool is_dirty;
    bool unallocated_reads_zero;
    /* Data clusters may be holes in the file that read zeroes (QEMU's
     * "metadata preallocation" guess); map then asks the file. */
    bool data_may_be_sparse;
    /* Clusters mapped without data read as garbage, not zeroes (QEMU's
     * has_zero_init false): an encrypted image preallocated at create. */
    bool no_zero_init;
} BlockDriverInfo;
int bdrv_get_info(BlockDriverState *bs, BlockDriverInfo *bdi);

/* Format-specific facts for `info` (qcow2's keys; others leave type NULL). */
typedef struct BlockSpecificInfo {
    const char *type;          /* "qcow2" or NULL */
    const char *compat;        /* "0.10" / "1.1" */
    const char *compression_type;
    bool lazy_refcounts;
    int refcount_bits;
    bool corrupt;
    bool extended_l2;
    /* qcow2 external data file: its recorded name (NULL: none; owned by
     * the node) and whether data-file-raw is reported at all */
    const char *data_file;
    bool has_data_file_raw;
    bool data_file_raw;
    /* qcow2 encryption: "aes", "luks" or NULL; for LUKS its header's
     * description (owned by the node; NULL if it cannot be read) */
    const char *encrypt_format;
    const struct LuksInfo *luks;
    /* The key option the node was opened with ("encrypt.key-secret" for
     * qcow2, "key-secret" for luks) and its value, or NULLs.  QEMU then
     * names the node by its options (json:{...}). */
    const char *key_secret_opt;
    const char *key_secret;
} BlockSpecificInfo;
void bdrv_get_specific_info(BlockDriverState *bs, BlockSpecificInfo *info);

/* Consistency check (qemu-img check). */
typedef enum {
    BDRV_FIX_NONE = 0,
    BDRV_FIX_LEAKS = 1,
    BDRV_FIX_ERRORS = 2,
} BdrvCheckMode;

typedef struct BdrvCheckResult {
    int corruptions;
    int leaks;
    int check_errors;
    int corruptions_fixed;
    int leaks_fixed;
    int64_t image_end_offset;
    int64_t total_clusters;     /* guest clusters */
    int64_t allocated_clusters;
    int64_t fragmented_clusters;
    int64_t compressed_clusters;
    bool has_allocation_info;
} BdrvCheckResult;
/* Returns 0 when the check ran (result in *res), -ENOTSUP if the format
 * cannot be checked, other -errno if it could not complete.  Messages about
 * each problem go to stderr as qemu-img prints them. */
int bdrv_check(BlockDriverState *bs, BdrvCheckResult *res, BdrvCheckMode fix);

/*
 * Corruption notices (QMP's BLOCK_IMAGE_CORRUPTED): a format driver that
 * finds its image corrupt reports it once; the embedding program may set
 * one notifier, called in whichever thread found it (fatal: the image
 * was marked corrupt and refuses writes from now on).
 */
typedef void BdrvCorruptionFunc(BlockDriverState *bs, const char *msg,
                                bool fatal, void *opaque);
void bdrv_set_corruption_notifier(BdrvCorruptionFunc *fn, void *opaque);
void bdrv_report_corruption(BlockDriverState *bs, const char *msg,
                            bool fatal);

G_END_DECLS

#endif
