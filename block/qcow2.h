/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 driver internals shared by the qcow2-*.c files: on-disk constants,
 * the per-image state, and the functions each file offers the others.
 * Format facts: QEMU's docs/interop/qcow2.txt (all integers big-endian).
 */
#ifndef STRATA_QCOW2_H
#define STRATA_QCOW2_H

#include <sys/types.h>

#include "block/block_int.h"
#include "block/crypto.h"

#define QCOW_MAGIC 0x514649fbU  /* "QFI\xfb" */

#define QCOW2_MIN_CLUSTER_BITS 9
#define QCOW2_MAX_CLUSTER_BITS 21
#define QCOW2_DEFAULT_CLUSTER_BITS 16

#define QCOW2_V2_HEADER_LENGTH 72
#define QCOW2_V3_MIN_HEADER_LENGTH 104
#define QCOW2_V3_HEADER_LENGTH 112  /* what QEMU 7.2 writes */

/* Limits QEMU enforces; we keep the same so images stay interchangeable. */
#define QCOW2_MAX_L1_BYTES (32 * 1024 * 1024)
#define QCOW2_MAX_REFTABLE_BYTES (8 * 1024 * 1024)
#define QCOW2_MAX_SNAPSHOTS 65536
#define QCOW2_MAX_SNAPSHOT_EXTRA 1024
#define QCOW2_MAX_SNAPSHOT_TABLE_BYTES (64 * 1024 * 1024)
#define QCOW2_MAX_BACKING_NAME 1023
#define QCOW2_MAX_HOST_OFFSET (1ULL << 56)

/* L1/L2 entry bits */
#define QCOW_OFLAG_COPIED     (1ULL << 63)
#define QCOW_OFLAG_COMPRESSED (1ULL << 62)
#define QCOW_OFLAG_ZERO       (1ULL << 0)
#define L1E_OFFSET_MASK       0x00fffffffffffe00ULL
#define L2E_OFFSET_MASK       0x00fffffffffffe00ULL
#define L1E_RESERVED_MASK     0x7f000000000001ffULL
#define L2E_RESERVED_MASK     0x3f000000000001feULL
#define REFT_OFFSET_MASK      0xfffffffffffffe00ULL
#define REFT_RESERVED_MASK    0x1ffULL

/* Header feature bits */
#define QCOW2_INCOMPAT_DIRTY       (1ULL << 0)
#define QCOW2_INCOMPAT_CORRUPT     (1ULL << 1)
#define QCOW2_INCOMPAT_DATA_FILE   (1ULL << 2)
#define QCOW2_INCOMPAT_COMPRESSION (1ULL << 3)
#define QCOW2_INCOMPAT_EXTL2       (1ULL << 4)
#define QCOW2_INCOMPAT_MASK        0x1fULL
#define QCOW2_COMPAT_LAZY_REFCOUNTS (1ULL << 0)
#define QCOW2_AUTOCLEAR_DATA_FILE_RAW (1ULL << 1)

/* Header extension types */
#define QCOW2_EXT_END           0x00000000U
#define QCOW2_EXT_BACKING_FMT   0xe2792acaU
#define QCOW2_EXT_FEATURE_TABLE 0x6803f857U
#define QCOW2_EXT_BITMAPS       0x23852875U
#define QCOW2_EXT_CRYPTO        0x0537be77U

/* crypt_method in the header */
#define QCOW2_CRYPT_NONE 0
#define QCOW2_CRYPT_AES  1
#define QCOW2_CRYPT_LUKS 2
#define QCOW2_EXT_DATA_FILE     0x44415441U
#define QCOW2_BITMAPS_EXT_LEN   24  /* nb, reserved, dir size, dir offset */

/* Header field offsets used for small atomic updates. */
#define QCOW2_HDR_SIZE_OFF        24
#define QCOW2_HDR_L1_OFF          36  /* l1_size (4) + l1_table_offset (8) */
#define QCOW2_HDR_REFTABLE_OFF    48  /* offset (8) + clusters (4) */
#define QCOW2_HDR_SNAPSHOTS_OFF   60  /* nb_snapshots (4) + offset (8) */
#define QCOW2_HDR_INCOMPAT_OFF    72

typedef enum {
    QCOW2_CLUSTER_UNALLOCATED,
    QCOW2_CLUSTER_ZERO_PLAIN,
    QCOW2_CLUSTER_ZERO_ALLOC,
    QCOW2_CLUSTER_NORMAL,
    QCOW2_CLUSTER_COMPRESSED,
} Qcow2ClusterType;

/* A header extension we do not interpret, kept for rewriting. */
typedef struct Qcow2UnknownExt {
    uint32_t magic;
    uint32_t len;
    uint8_t *data;
} Qcow2UnknownExt;

typedef struct Qcow2Snapshot {
    uint64_t l1_table_offset;
    uint32_t l1_size;
    char *id_str;
    char *name;
    uint32_t date_sec;
    uint32_t date_nsec;
    uint64_t vm_clock_nsec;
    uint64_t vm_state_size;
    uint64_t disk_size;
    uint64_t icount;           /* UINT64_MAX: none */
    uint32_t extra_data_size;  /* as read; we write max(24, this) */
    uint8_t *unknown_extra;    /* bytes past the 24 we know */
    uint32_t unknown_extra_size;
} Qcow2Snapshot;

typedef struct Qcow2Cache Qcow2Cache;
typedef struct Qcow2Bitmaps Qcow2Bitmaps;  /* qcow2-bitmap.c */
typedef struct Qcow2Overlap Qcow2Overlap;

/* Kinds of metadata the overlap check knows, in QEMU's bit order. */
enum {
    QCOW2_OL_MAIN_HEADER_BITNR,
    QCOW2_OL_ACTIVE_L1_BITNR,
    QCOW2_OL_ACTIVE_L2_BITNR,
    QCOW2_OL_REFCOUNT_TABLE_BITNR,
    QCOW2_OL_REFCOUNT_BLOCK_BITNR,
    QCOW2_OL_SNAPSHOT_TABLE_BITNR,
    QCOW2_OL_INACTIVE_L1_BITNR,
    QCOW2_OL_INACTIVE_L2_BITNR,
    QCOW2_OL_MAX_BITNR,
};
#define QCOW2_OL_MAIN_HEADER    (1U << QCOW2_OL_MAIN_HEADER_BITNR)
#define QCOW2_OL_ACTIVE_L1      (1U << QCOW2_OL_ACTIVE_L1_BITNR)
#define QCOW2_OL_ACTIVE_L2      (1U << QCOW2_OL_ACTIVE_L2_BITNR)
#define QCOW2_OL_REFCOUNT_TABLE (1U << QCOW2_OL_REFCOUNT_TABLE_BITNR)
#define QCOW2_OL_REFCOUNT_BLOCK (1U << QCOW2_OL_REFCOUNT_BLOCK_BITNR)
#define QCOW2_OL_SNAPSHOT_TABLE (1U << QCOW2_OL_SNAPSHOT_TABLE_BITNR)
#define QCOW2_OL_INACTIVE_L1    (1U << QCOW2_OL_INACTIVE_L1_BITNR)
#define QCOW2_OL_INACTIVE_L2    (1U << QCOW2_OL_INACTIVE_L2_BITNR)

/* A guest range whose clusters are being allocated outside the lock. */
typedef struct Qcow2InflightAlloc {
    uint64_t guest_start;       /* cluster aligned */
    uint64_t guest_end;
    struct Qcow2InflightAlloc *next;
} Qcow2InflightAlloc;

/* qcow2 runtime options (qcow2-options.c), as QEMU 7.2 names them. */
typedef struct Qcow2RuntimeOpts {
    int l2_tables;             /* L2 cache size in tables; 0: our default */
    int refcount_tables;       /* refcount cache size in blocks; 0: default */
    uint32_t l2_entry_size;    /* l2-cache-entry-size (validated only) */
    uint64_t cache_clean_interval;  /* seconds; 0: never */
    bool lazy_refcounts;
    bool discard_request, discard_snapshot, discard_other;
} Qcow2RuntimeOpts;

typedef struct BDRVQcow2State {
    /*
     * lock protects every field below and all metadata I/O.  Data I/O to
     * clusters already allocated runs without it; free_lock (held for
     * reading by every data request, for writing while freed clusters are
     * handed back to the allocator) keeps a cluster from being reused
     * while a request still reads or writes it.
     */
    GMutex lock;
    GRWLock free_lock;
    GCond alloc_cond;
    int alloc_waiters;         /* threads waiting on alloc_cond */
    Qcow2InflightAlloc *inflight;

    int version;
    int cluster_bits;
    uint32_t cluster_size;
    int l2_bits;               /* log2(entries per L2 table) */
    uint32_t l2_size;          /* entries per L2 table */
    /* Extended L2 entries (incompatible bit 4) are 16 bytes: the usual
     * descriptor, then a bitmap over 32 subclusters.  An entry is
     * 8 << l2_entry_shift bytes; a subcluster is the whole cluster
     * without them. */
    int l2_entry_shift;
    int subcluster_bits;
    int refcount_order;
    int refcount_bits;
    uint64_t refcount_max;
    int refblock_bits;         /* log2(entries per refcount block) */
    uint32_t refblock_size;    /* entries per refcount block */
    int csize_shift;           /* compressed descriptor layout */
    uint64_t csize_mask;
    uint64_t coffset_mask;

    uint64_t size;             /* virtual disk size */
    uint32_t header_length;
    uint64_t incompatible_features;
    uint64_t compatible_features;
    uint64_t autoclear_features;
    uint8_t compression_type;
    uint8_t *unknown_header_fields;
    uint32_t unknown_header_fields_size;
    GPtrArray *unknown_exts;   /* Qcow2UnknownExt * */
    struct Qcow2IntentInfo *intent;  /* qcow2-intent.c: what open found */

    uint64_t *l1_table;        /* host byte order */
    uint32_t l1_size;
    uint64_t l1_table_offset;

    uint64_t *refcount_table;  /* host byte order */
    uint32_t refcount_table_size;  /* entries */
    uint64_t refcount_table_offset;

    uint32_t nb_snapshots;
    uint64_t snapshots_offset;
    uint64_t snapshots_size;   /* bytes of the table on disk */
    /* An open for repair (check -r) keeps a snapshot table that any
     * other open refuses: entries whose extra data is over the limit are
     * cut to it, entries past the table's size limit, past the 65536th
     * or past the end of the file (a truncated image) are dropped; check
     * reports the damage or repairs it (qcow2-snapshot-table.c). */
    uint32_t sn_extra_cut;     /* entries whose extra data was cut */
#define SN_CUT_LOGGED 16
    uint32_t sn_cut_entry[SN_CUT_LOGGED], sn_cut_size[SN_CUT_LOGGED];
    uint32_t sn_discarded;     /* overhanging entries dropped */
    uint32_t sn_over_max;      /* entries past QCOW2_MAX_SNAPSHOTS dropped */
    uint32_t sn_past_end;      /* entries dropped from the first one that
                                * is not inside the file on */
    char *sn_damage;           /* what any other open says about it */
    Qcow2Snapshot *snapshots;

    Qcow2Cache *l2_cache;
    Qcow2Cache *refcount_cache;
    /* refcount writes made since the last fdatasync: an L2 write must
     * sync first so the refcount is durable before the pointer */
    bool refcounts_unsynced;

    uint64_t free_cluster_index;
    /* Where the next compressed cluster may go (inside a host cluster
     * that compressed data fills part of); 0: start a new host cluster. */
    uint64_t free_byte_offset;
    /* uint64_t host cluster offsets to decrement, each with
     * QCOW2_FREE_PUNCH set if its host space goes back once free */
    GArray *pending_frees;
    /* How many of pending_frees a discard or an unmapping zero write
     * queued: worth a sync before the image grows (qcow2_reclaim_pays). */
    uint64_t unmapped_frees;
    /* uint64_t host cluster indices whose counts a free lowered to 0 and
     * whose space goes back to the host after the next sync (the sync
     * makes the pointers' removal durable first): qcow2_punch_pending */
    GArray *pending_punches;

    bool corrupt_reported;
    /* Corruption was found while writable: like QEMU, the image takes no
     * more writes (data or metadata) until it is reopened. */
    bool broken;
    /* Metadata overlap protection (qcow2-overlap.c); NULL: none yet. */
    Qcow2Overlap *overlap;

    /* Internal snapshot operations between check and clean, oldest
     * first (qcow2-snapshot.c); NULL when there are none. */
    GPtrArray *snapshot_ops;
    /* A snapshot was loaded read-only in place of the active image. */
    bool snapshot_loaded;

    /* Runtime options in force, and the option strings they came from
     * (a reopen merges new options into these, as QEMU does). */
    Qcow2RuntimeOpts rt;
    BlockOpts *rt_opts;
    /* This open set the dirty bit (lazy refcounts); a clean close or a
     * switch to read-only clears it. */
    bool dirtied_here;

    /* External data file (incompatible bit 2): the name the header
     * extension records (NULL: none), and the node guest data lives in
     * (NULL: none, the data is in bs->file).  Use qcow2_data() for the
     * node data I/O goes to, so one code path serves both layouts. */
    char *data_file_name;
    BlockDriverState *data_file;
    /* Opened with BDRV_O_NO_IO: the image has a data file that was not
     * opened, so guest data cannot be read (qcow2_data_missing()). */
    bool data_file_skipped;

    /* Persistent dirty bitmaps (qcow2-bitmap.c); NULL: none seen. */
    Qcow2Bitmaps *bm;

    /* Encryption (qcow2-crypto.c): the header's method, where the LUKS
     * header lies, the unlocked cipher (NULL: not encrypted, or opened
     * only to be described) and info's cached description. */
    uint32_t crypt_method;     /* QCOW2_CRYPT_* */
    bool has_crypto_hdr;
    uint64_t crypto_hdr_offset;
    uint64_t crypto_hdr_length;
    struct BlockCrypto *crypto;
    GBytes *crypto_secret;     /* the secret that unlocked it (amend) */
    char *key_secret_id;       /* encrypt.key-secret as given at open */
    struct LuksInfo *luks_info;
} BDRVQcow2State;

/* The image keeps its guest data in an external data file: every data
 * cluster sits at its guest offset there and has no refcount. */
static inline bool qcow2_has_data_file(BDRVQcow2State *s)
{
    return !!(s->incompatible_features & QCOW2_INCOMPAT_DATA_FILE);
}

/* The data file must stay a valid raw image of the disk (autoclear bit
 * 1): zeroes written through the image must read as zeroes there too. */
static inline bool qcow2_data_file_raw(BDRVQcow2State *s)
{
    return qcow2_has_data_file(s) &&
           (s->autoclear_features & QCOW2_AUTOCLEAR_DATA_FILE_RAW);
}

static inline BlockDriverState *qcow2_data(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;

    return s->data_file ? s->data_file : bs->file;
}

/*
 * Extended L2 entries.  In the bitmap, bit x says subcluster x reads from
 * the host cluster, bit 32 + x that it reads as zeroes, neither that it
 * reads from the backing file (or zeroes without one).  A compressed
 * cluster has bitmap 0 and is data throughout.
 */
#define QCOW_L2_BITMAP_ALL_ALLOC  0x00000000ffffffffULL
#define QCOW_L2_BITMAP_ALL_ZEROES 0xffffffff00000000ULL
#define QCOW2_SUBCLUSTERS 32

static inline bool qcow2_has_subclusters(BDRVQcow2State *s)
{
    return s->l2_entry_shift != 0;
}

/* Entry i's descriptor.  Bit 0 of a standard cluster's (its zero flag)
 * is reserved with extended entries and ignored here, as QEMU ignores it;
 * a compressed cluster's is part of its offset. */
static inline uint64_t qcow2_l2_get(BDRVQcow2State *s, const uint64_t *l2,
                                    uint64_t i)
{
    uint64_t e = GUINT64_FROM_BE(l2[i << s->l2_entry_shift]);

    if (qcow2_has_subclusters(s) && !(e & QCOW_OFLAG_COMPRESSED)) {
        e &= ~QCOW_OFLAG_ZERO;
    }
    return e;
}

/* Sets entry i's descriptor and nothing else (its bitmap stays). */
static inline void qcow2_l2_set(BDRVQcow2State *s, uint64_t *l2, uint64_t i,
                                uint64_t e)
{
    l2[i << s->l2_entry_shift] = GUINT64_TO_BE(e);
}

/* Entry i's subcluster bitmap (0 without extended entries). */
static inline uint64_t qcow2_l2_bitmap(BDRVQcow2State *s, const uint64_t *l2,
                                       uint64_t i)
{
    return qcow2_has_subclusters(s) ? GUINT64_FROM_BE(l2[2 * i + 1]) : 0;
}

static inline void qcow2_l2_set_bitmap(BDRVQcow2State *s, uint64_t *l2,
                                       uint64_t i, uint64_t bitmap)
{
    g_assert(qcow2_has_subclusters(s));
    l2[2 * i + 1] = GUINT64_TO_BE(bitmap);
}

/* qcow2-subcluster.c.  A view entry is what lookup(view=true) gives
 * readers: for a standard image the L2 entry itself; with extended entries
 * the standard entry one subcluster reads like.  A subcluster that reads
 * from the backing file although its cluster has a host cluster gets the
 * host offset with this bit (reserved in descriptors, so never confused
 * with a real one). */
#define QCOW2_VIEW_BACKING (1ULL << 1)
enum { QCOW2_SC_BACKING, QCOW2_SC_DATA, QCOW2_SC_ZERO };
int qcow2_sc_kind(uint64_t bitmap, unsigned sc);
uint64_t qcow2_sc_range_bits(unsigned from, unsigned to);
bool qcow2_sc_bitmap_valid(BDRVQcow2State *s, uint64_t d, uint64_t bitmap);
Qcow2ClusterType qcow2_view_type(BDRVQcow2State *s, uint64_t e);
void qcow2_view_run(BDRVQcow2State *s, const uint64_t *l2, uint64_t l2i,
                    uint64_t in_cluster, uint64_t max_clusters,
                    uint64_t bytes, uint64_t first, uint64_t *entry,
                    uint64_t *run);
uint64_t qcow2_sc_floor(BDRVQcow2State *s, uint64_t off);
uint64_t qcow2_sc_ceil(BDRVQcow2State *s, uint64_t off);
uint64_t qcow2_sc_written_bitmap(BDRVQcow2State *s, uint64_t bitmap,
                                 uint64_t cstart, uint64_t ws, uint64_t we);
bool qcow2_entry_has_data(BDRVQcow2State *s, uint64_t d);
uint64_t qcow2_sc_cow_start(BDRVQcow2State *s, uint64_t d, uint64_t bitmap,
                            uint64_t off);
uint64_t qcow2_sc_cow_end(BDRVQcow2State *s, uint64_t d, uint64_t bitmap,
                          uint64_t end);

static inline uint64_t qcow2_align_up(uint64_t x, uint64_t a)
{
    return (x + a - 1) / a * a;
}

static inline uint64_t qcow2_cluster_start(BDRVQcow2State *s, uint64_t off)
{
    return off & ~((uint64_t)s->cluster_size - 1);
}

static inline uint64_t qcow2_l1_entries_for(BDRVQcow2State *s, uint64_t size)
{
    uint64_t l2_span = (uint64_t)s->cluster_size * s->l2_size;
    return (size + l2_span - 1) / l2_span;
}

Qcow2ClusterType qcow2_get_cluster_type(uint64_t l2_entry);
/* The same, knowing the image: with a data file, offset 0 with COPIED is
 * the data cluster at offset 0 of the data file, not an empty entry. */
Qcow2ClusterType qcow2_entry_type(BDRVQcow2State *s, uint64_t l2_entry);

/* qcow2-cache.c: bounded write-back caches of L2 tables / refcount blocks */
/* before_write runs before any dirty table of this cache is written (the
 * L2 cache uses it to make refcounts durable first). */
Qcow2Cache *qcow2_cache_new(int num_tables, uint32_t table_size,
                            int (*before_write)(BlockDriverState *bs));
void qcow2_cache_destroy(Qcow2Cache *c);
/* cache-clean-interval in seconds (0: never drop unused clean tables). */
void qcow2_cache_set_clean_interval(Qcow2Cache *c, uint64_t seconds);
/* Tables are kept in on-disk (big-endian) byte order.  A pointer stays
 * valid until the next cache call, all under the qcow2 lock. */
int qcow2_cache_get(BlockDriverState *bs, Qcow2Cache *c, uint64_t offset,
                    void **table);
int qcow2_cache_get_empty(BlockDriverState *bs, Qcow2Cache *c,
                          uint64_t offset, void **table);
/* -EIO (and nothing marked) if the table is not in the cache: callers
 * whose table was evicted or discarded under them get an error, not an
 * abort. */
int qcow2_cache_mark_dirty(Qcow2Cache *c, void *table);
/* The overlap type its tables are (ignored when writing them back). */
void qcow2_cache_set_overlap_type(Qcow2Cache *c, uint32_t type);
int qcow2_cache_write(BlockDriverState *bs, Qcow2Cache *c);
/* Writes one table (if cached and dirty), dependencies first. */
int qcow2_cache_write_table(BlockDriverState *bs, Qcow2Cache *c,
                            uint64_t offset);
void qcow2_cache_discard(Qcow2Cache *c, uint64_t offset);
/* Every table marked dirty from now on adds its offset (a g_malloc'd
 * uint64_t) to log, a set with g_int64 hash and equality; NULL stops. */
void qcow2_cache_set_dirty_log(Qcow2Cache *c, GHashTable *log);
void qcow2_cache_discard_all(Qcow2Cache *c);
bool qcow2_cache_has_dirty(Qcow2Cache *c);

/* qcow2-refcount.c */
uint64_t qcow2_refblock_get(BDRVQcow2State *s, const void *rb, uint64_t i);
void qcow2_refblock_set(BDRVQcow2State *s, void *rb, uint64_t i, uint64_t v);
/* Cache hooks keeping refcounts durable before L2 tables point at them. */
int qcow2_before_l2_write(BlockDriverState *bs);
int qcow2_before_refblock_write(BlockDriverState *bs);
int qcow2_get_refcount(BlockDriverState *bs, uint64_t cluster_index,
                       uint64_t *refcount);
int qcow2_update_cluster_refcount(BlockDriverState *bs, uint64_t cluster_index,
                                  int addend, uint64_t *new_refcount);
int64_t qcow2_alloc_clusters(BlockDriverState *bs, uint64_t nb_clusters);
/* The same; `what` ("L2 table", ...) names the allocation in QEMU's
 * corruption message for a run at offset 0 (NULL: data clusters). */
int64_t qcow2_alloc_clusters_for(BlockDriverState *bs, uint64_t nb_clusters,
                                 const char *what);
/* Up to nb_clusters from the cluster-aligned `offset`, as many as are
 * free in a row there: how many (0: none), or -errno.  A write goes on
 * where its previous run ended, as QEMU's does. */
int64_t qcow2_alloc_clusters_at(BlockDriverState *bs, uint64_t offset,
                                uint64_t nb_clusters);
int qcow2_update_refcount_range(BlockDriverState *bs, uint64_t offset,
                                uint64_t length, int addend);
/* Frees after the next metadata write-back (pointers first, then counts).
 * With punch, a cluster whose count then reaches 0 is also discarded in
 * the file, so the host gets the space back (QEMU's pass-discard-*). */
#define QCOW2_FREE_PUNCH 1ULL
/* Why clusters are freed, which decides whether their host space goes
 * back (QEMU's discard types and pass-discard-* options):
 * NEVER: the next allocation reuses them anyway (copies of shared or
 *   compressed data clusters);
 * ALWAYS: they never held anything live (a failed or undone step's own
 *   allocations);
 * SNAPSHOT: a snapshot operation's leftovers (pass-discard-snapshot);
 * OTHER: metadata replaced by a bigger or a private copy: an old L1 or
 *   L2 table, refcount structures, a bitmap directory
 *   (pass-discard-other). */
typedef enum Qcow2FreeReason {
    QCOW2_FREE_NEVER,
    QCOW2_FREE_ALWAYS,
    QCOW2_FREE_SNAPSHOT,
    QCOW2_FREE_OTHER,
} Qcow2FreeReason;
bool qcow2_discard_passes(BlockDriverState *bs, Qcow2FreeReason why);
/* The deferred free of host_cluster for that reason. */
void qcow2_free_cluster_for(BlockDriverState *bs, uint64_t host_cluster,
                            Qcow2FreeReason why);
/* Refcounts -1 for [offset, offset+bytes), which nothing points at any
 * more; a count that reaches 0 is queued for qcow2_punch_pending when
 * `why` says so. */
int qcow2_release_range(BlockDriverState *bs, uint64_t offset,
                        uint64_t bytes, Qcow2FreeReason why);
/* qcow2-resize.c: under s->lock, with the refcounts synced, the file
 * cut after its last cluster in use (advisory: a failure warns). */
void qcow2_cut_free_tail(BlockDriverState *bs);
/* Under s->lock: syncs the file, then gives back the clusters queued by
 * qcow2_free_unreferenced that are still free.  Advisory. */
void qcow2_punch_pending(BlockDriverState *bs);
void qcow2_free_cluster_deferred(BlockDriverState *bs, uint64_t host_cluster);
void qcow2_free_deferred(BlockDriverState *bs, uint64_t host_cluster,
                         bool punch);
void qcow2_free_compressed_deferred(BlockDriverState *bs, uint64_t l2_entry,
                                    bool punch);
/* Host clusters whose counts reached 0, given back to the file in runs:
 * add each, then flush (a discard is advice: its failure is ignored). */
typedef struct Qcow2PunchRun {
    uint64_t first, n;          /* clusters */
} Qcow2PunchRun;
void qcow2_punch_add(BlockDriverState *bs, Qcow2PunchRun *r,
                     uint64_t cluster);
void qcow2_punch_flush(BlockDriverState *bs, Qcow2PunchRun *r);
/* Writes back all metadata in crash-safe order; applies deferred frees. */
int qcow2_write_back_metadata(BlockDriverState *bs);
bool qcow2_reclaim_pays(BlockDriverState *bs, uint64_t nb_clusters);
int qcow2_reclaim_frees(BlockDriverState *bs);

/* qcow2-cluster.c */
int qcow2_pread(BlockDriverState *bs, int64_t offset, int64_t bytes,
                void *buf);
int qcow2_pwrite(BlockDriverState *bs, int64_t offset, int64_t bytes,
                 const void *buf);
/* The same past the disk's end (the VM state area); for writes the L1
 * table must already reach the range. */
int qcow2_pread_any(BlockDriverState *bs, int64_t offset, int64_t bytes,
                    void *buf);
int qcow2_pwrite_any(BlockDriverState *bs, int64_t offset, int64_t bytes,
                     const void *buf);
int qcow2_pwrite_zeroes(BlockDriverState *bs, int64_t offset, int64_t bytes,
                        int flags);
int qcow2_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes);
int qcow2_block_status(BlockDriverState *bs, int64_t offset, int64_t bytes,
                       int64_t *pnum, int64_t *map, BlockDriverState **file);
int qcow2_grow_l1_table(BlockDriverState *bs, uint64_t min_size);
int qcow2_preallocate_metadata(BlockDriverState *bs, uint64_t offset,
                               uint64_t bytes, uint64_t *file_end);
int qcow2_decompress_cluster(BlockDriverState *bs, uint64_t l2_entry,
                             uint8_t *out);
void qcow2_compressed_range(BDRVQcow2State *s, uint64_t l2_entry,
                            uint64_t *offset, uint64_t *length);
/* Under s->lock, for compressed writes and resize: the L2 entry of a
 * guest offset (for_write: in a table of the active image alone, allocated
 * if need be; and then its subcluster bitmap if asked); replacing it and
 * its bitmap (copying a shared table first, releasing what the old entry
 * pointed at); the list of guest ranges being allocated. */
int qcow2_l2_entry_get(BlockDriverState *bs, uint64_t off, bool for_write,
                       uint64_t *entry, uint64_t *bitmap);
int qcow2_l2_entry_set(BlockDriverState *bs, uint64_t off, uint64_t entry,
                       uint64_t bitmap);
bool qcow2_inflight_overlaps(BDRVQcow2State *s, uint64_t start, uint64_t end);
void qcow2_inflight_wait(BDRVQcow2State *s);
void qcow2_inflight_remove(BDRVQcow2State *s, Qcow2InflightAlloc *a);
/* Also qcow2-cluster.c's, for qcow2-zero.c (each says more there): the L1
 * and L2 indexes of a guest offset; an L2 table loaded (for_write: owned
 * by the active image alone); a run of guest bytes mapped alike (view:
 * as readers see it, per subcluster); what an entry pointed at released
 * (deferred), counted towards a reclaim if a discard unmapped it. */
void qcow2_split_offset(BDRVQcow2State *s, uint64_t off, uint64_t *l1_index,
                        uint64_t *l2_index);
int qcow2_l2_load(BlockDriverState *bs, uint64_t l1_index, bool for_write,
                  uint64_t **l2);
int qcow2_cluster_lookup(BlockDriverState *bs, uint64_t off, uint64_t bytes,
                         bool view, uint64_t *entry, uint64_t *run);
void qcow2_release_entry(BlockDriverState *bs, uint64_t e);
void qcow2_release_unmapped(BlockDriverState *bs, uint64_t e);

/* qcow2-compress.c: compressed clusters */
#define QCOW2_COMPRESSION_ZLIB 0
#define QCOW2_COMPRESSION_ZSTD 1
/* The compressed size, -ENOMEM if it does not fit in dst_size, -EIO. */
ssize_t qcow2_compress(uint8_t type, void *dst, size_t dst_size,
                       const void *src, size_t src_size);
/* Exactly dst_size bytes from at most src_size: 0 or -EIO. */
int qcow2_decompress(uint8_t type, void *dst, size_t dst_size,
                     const void *src, size_t src_size);
/* Whole clusters from a cluster-aligned offset (the last one may end at
 * the end of the image); bytes == 0 pads the file to a whole sector. */
int qcow2_pwrite_compressed(BlockDriverState *bs, int64_t offset,
                            int64_t bytes, const void *buf);
/* compression_type=zlib|zstd of a create: the header byte, or -1 and
 * errp set. */
int qcow2_parse_compression_type(const char *value, int version,
                                 GError **errp);
/* qcow2-zero.c: for a shrink, the clusters past the new end unmapped */
int qcow2_discard_unmap(BlockDriverState *bs, uint64_t offset,
                        uint64_t bytes);

/* qcow2-header.c: parse, validate, and rewrite cluster 0 */
int qcow2_read_header(BlockDriverState *bs, int flags, GError **errp);
int qcow2_write_header(BlockDriverState *bs, GError **errp);
/* The same without the flush (qcow2-intent.c: a later flush covers it). */
int qcow2_write_header_nosync(BlockDriverState *bs, GError **errp);
int qcow2_write_header_bytes(BlockDriverState *bs, int offset,
                             const void *buf, int len);
void qcow2_signal_corruption(BlockDriverState *bs, const char *fmt, ...)
    G_GNUC_PRINTF(2, 3);
/* A metadata cache was asked for a table at an offset inside a cluster:
 * the image is marked corrupt, naming the table entry that holds it. */
void qcow2_signal_unaligned_table(BlockDriverState *bs, uint32_t ol_type,
                                  uint64_t offset);

/* qcow2-snapshot-table.c, qcow2-snapshot.c */
int qcow2_read_snapshots(BlockDriverState *bs, GError **errp);
void qcow2_free_snapshots(BDRVQcow2State *s);
/* Open options snapshot.id / snapshot.name: load that snapshot read-only. */
int qcow2_snapshot_open_options(BlockDriverState *bs, BlockOpts *options,
                                int flags, GError **errp);
/* For check, under the locks: version 3 entries without the disk size
 * (extra data shorter than 16 bytes) are corrupt; fix rewrites them. */
/* Before counting references: refuses (-EFBIG) to check a snapshot table
 * that an open for repair kept only in part, unless fix repairs errors;
 * then drops the overhanging entries from the header first, so their
 * clusters become leaks that the repair reclaims, and counts each dropped
 * entry in res as a corruption repaired (as QEMU does). */
int qcow2_snapshot_check_damage(BlockDriverState *bs, BdrvCheckResult *res,
                                BdrvCheckMode fix);
int qcow2_snapshot_check_table(BlockDriverState *bs, BdrvCheckResult *res,
                               BdrvCheckMode fix);
/* Ends operations left between check and clean (cancel what was done,
 * clean the rest). */
void qcow2_snapshot_close(BlockDriverState *bs);
int qcow2_snapshot_list(BlockDriverState *bs, BdrvSnapshotInfo **list,
                        GError **errp);
/* The phases of include/block/snapshot.h (qcow2-snapshot.c). */
int qcow2_snapshot_create_check(BlockDriverState *bs,
                                const BdrvSnapshotInfo *tmpl, int flags,
                                BdrvSnapshotInfo *info, void **op,
                                GError **errp);
int qcow2_snapshot_delete_check(BlockDriverState *bs, const char *id,
                                const char *name, BdrvSnapshotInfo *info,
                                void **op, GError **errp);
int qcow2_snapshot_goto_check(BlockDriverState *bs, const char *id,
                              const char *name, BdrvSnapshotInfo *info,
                              void **op, GError **errp);
/* Optional, before the drain (guest I/O running): a create's pre-copy. */
int qcow2_snapshot_pre_do(BlockDriverState *bs, void *op, GError **errp);
void qcow2_snapshot_pre_cancel(BlockDriverState *bs, void *op);
int qcow2_snapshot_do(BlockDriverState *bs, void *op, BdrvSnapshotInfo *info,
                      GError **errp);
int qcow2_snapshot_invalidate(BlockDriverState *bs, void *op, GError **errp);
int qcow2_snapshot_cancel(BlockDriverState *bs, void *op, GError **errp);
int qcow2_snapshot_clean(BlockDriverState *bs, void *op, GError **errp);
int qcow2_snapshot_publish_bytes(BlockDriverState *bs, void *op,
                                 uint64_t *offset, uint32_t *len,
                                 uint8_t *new_bytes, bool *synced);
int qcow2_snapshot_load_tmp(BlockDriverState *bs, const char *id,
                            const char *name, GError **errp);

/* qcow2-snapshot-tree.c: sharing and releasing trees (under the locks) */
/* Refcount of every L2 table and data cluster under l1 +1 (in the cache;
 * all or nothing). */
int qcow2_tree_ref(BlockDriverState *bs, const uint64_t *l1, uint32_t l1_size,
                   GError **errp);
/* COPIED cleared in the tree's L2 tables and in the l1 array itself. */
int qcow2_tree_clear_copied(BlockDriverState *bs, uint64_t *l1,
                            uint32_t l1_size, GError **errp);
/* Releases a tree nothing points at: COPIED preset, refcounts -1, the
 * L1 table's own clusters (l1_offset, 0: none) freed, COPIED recomputed. */
int qcow2_tree_release(BlockDriverState *bs, const uint64_t *l1,
                       uint32_t l1_size, uint64_t l1_offset, GError **errp);
/* Dirty L2 tables written (refcounts first), the active L1 if changed,
 * then a sync. */
int qcow2_write_active_tree(BlockDriverState *bs, bool l1_changed);
int qcow2_write_l1_at(BlockDriverState *bs, uint64_t offset,
                      const uint64_t *l1, uint32_t n);
/* Refcounts -1 for clusters nothing points at; a failure only leaks.
 * A cluster whose count reaches 0 goes back to the host after the next
 * sync when `why` says so (qcow2_discard_passes). */
int qcow2_free_unreferenced(BlockDriverState *bs, uint64_t offset,
                            uint64_t bytes, Qcow2FreeReason why);
/* Passes ret through; a failure is reported as QEMU's frees report it.
 * For the sites that emit blkdebug's cluster_free. */
int qcow2_free_failed(int ret);

/* qcow2-overlap.c: metadata overlap protection (QEMU's overlap-check).
 * Reads overlap-check / overlap-check.template / overlap-check.<type>. */
int qcow2_overlap_open_options(BlockDriverState *bs, BlockOpts *options,
                               GError **errp);
void qcow2_overlap_free(BDRVQcow2State *s);
/* Before writing [offset, offset+bytes) or handing it out: 0 if it
 * overlaps no checked metadata except the types in ign; else the image
 * is marked corrupt (QEMU's message) and -EIO returned.  Under s->lock. */
int qcow2_overlap_check(BlockDriverState *bs, uint32_t ign, uint64_t offset,
                        uint64_t bytes);
/* The same without reporting: the first QCOW2_OL_* type hit, or 0. */
int qcow2_overlap_find(BlockDriverState *bs, uint32_t ign, uint64_t offset,
                       uint64_t bytes);
/* qcow2_overlap_check, then bdrv_pwrite to the image file. */
int qcow2_overlap_pwrite(BlockDriverState *bs, uint32_t ign, int64_t offset,
                         int64_t bytes, const void *buf);
/* Metadata came or went where the index cannot see it by itself (an L1
 * entry, a refcount-table entry changed in place). */
void qcow2_overlap_add(BDRVQcow2State *s, uint32_t type, uint64_t offset,
                       uint64_t bytes);
void qcow2_overlap_remove(BDRVQcow2State *s, uint32_t type, uint64_t offset,
                          uint64_t bytes);
/* Tables changed wholesale in place: rebuild before the next check. */
void qcow2_overlap_invalidate(BDRVQcow2State *s);

/* qcow2-options.c: the runtime options (cache sizes, cache-clean-interval,
 * lazy-refcounts, pass-discard-*, overlap-check) at open and reopen. */
/* At open: takes the runtime option keys out of options, validates them
 * (QEMU's texts) and applies them: caches sized, overlap check set. */
int qcow2_runtime_opts_open(BlockDriverState *bs, BlockOpts *options,
                            int flags, GError **errp);
/* At reopen (commit false: validate and take the keys it knows out of
 * opts, nothing changes; commit true: apply, after a validation). */
int qcow2_runtime_opts_reopen(BlockDriverState *bs, BlockOpts *opts,
                              bool commit, GError **errp);
void qcow2_runtime_opts_free(BDRVQcow2State *s);

/* qcow2-lazy.c: lazy refcounts and the dirty bit */
/* Sets the dirty bit on disk (synced) if it is not set yet. */
int qcow2_mark_dirty(BlockDriverState *bs);
/* Writes back all metadata, then clears the dirty bit (synced). */
int qcow2_mark_clean(BlockDriverState *bs);
/* A guest flush: with lazy refcounts only the L2 tables go to disk. */
int qcow2_lazy_write_back(BlockDriverState *bs);
/* Open read-write of a dirty image: refcounts repaired (check -r all). */
int qcow2_repair_dirty(BlockDriverState *bs, int flags, GError **errp);

/* qcow2-vmstate.c: the VM state area past the disk (save/load_vmstate) */
int qcow2_save_vmstate(BlockDriverState *bs, const void *buf, int64_t pos,
                       int64_t size);
int qcow2_load_vmstate(BlockDriverState *bs, void *buf, int64_t pos,
                       int64_t size);

/* qcow2-check.c */
int qcow2_check(BlockDriverState *bs, BdrvCheckResult *res, BdrvCheckMode fix);

/* qcow2-create.c */
bool qcow2_create(const char *filename, BlockOpts *opts, GError **errp);

/* qcow2-intent.c: the strata intent extension at open (before the header
 * is parsed: recovery may rewrite it) and at close */
int qcow2_intent_open(BlockDriverState *bs, int flags, GError **errp);
void qcow2_intent_close(BlockDriverState *bs);

/* qcow2.c */
int qcow2_truncate(BlockDriverState *bs, int64_t size, GError **errp);

/* qcow2-resize.c: grow (with a BdrvPreallocMode) and shrink */
int qcow2_truncate_prealloc(BlockDriverState *bs, int64_t size, int prealloc,
                            GError **errp);

/* qcow2-amend.c: qemu-img amend */
int qcow2_amend(BlockDriverState *bs, BlockOpts *opts, bool force,
                BdrvAmendStatusCB *status_cb, void *cb_opaque, GError **errp);

/* qcow2-crypto.c */
typedef struct Qcow2CryptoCreate {
    uint32_t method;           /* QCOW2_CRYPT_AES or QCOW2_CRYPT_LUKS */
    const char *key_secret;
    LuksCreateOptions luks;
} Qcow2CryptoCreate;

bool qcow2_crypto_parse_ext(BlockDriverState *bs, const uint8_t *data,
                            uint32_t len, GError **errp);
bool qcow2_crypto_ext_bytes(BDRVQcow2State *s, uint8_t out[16]);
int qcow2_crypto_open(BlockDriverState *bs, BlockOpts *options, int flags,
                      GError **errp);
void qcow2_crypto_close(BDRVQcow2State *s);
/* Guest data at host offset `host` (guest offset `guest`), through the
 * cipher when the image is encrypted. */
int qcow2_data_pread(BlockDriverState *bs, uint64_t host, uint64_t guest,
                     uint64_t n, uint8_t *buf);
int qcow2_data_pwrite(BlockDriverState *bs, uint64_t host, uint64_t guest,
                      uint64_t n, const uint8_t *buf);
const LuksInfo *qcow2_crypto_luks_info(BlockDriverState *bs);
int qcow2_crypto_setup(BlockDriverState *bs, const Qcow2CryptoCreate *c,
                       GError **errp);
bool qcow2_crypto_amend_requested(BlockOpts *opts);
int qcow2_crypto_amend(BlockDriverState *bs, BlockOpts *opts, bool force,
                       GError **errp);

/* Guest data cannot be read or written: a data file or the key is
 * missing (the image was opened only to be described). */
static inline bool qcow2_data_unavailable(BDRVQcow2State *s)
{
    return s->data_file_skipped || (s->crypt_method && !s->crypto);
}

#endif
