/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * External snapshots of a device: a new overlay image goes on top of the
 * device's chain, the old top becomes its read-only backing file, and the
 * guest keeps writing to the overlay.
 *
 * The operation comes in the phases of a transaction action (DESIGN.md;
 * the phases and their names are defined in include/block/snapshot.h):
 *   check       validates; no side effect at all.  The target must not be
 *               an image open anywhere in this process (any device's
 *               chain, any node: compared by device and inode) nor named
 *               twice in one set of operations (the set the caller
 *               passes, which check adds the target to)
 *   do          creates the overlay file (or opens an existing one) and
 *               opens it; nothing the device or the chain on disk shows
 *   invalidate  makes it visible: the one commit-point write if any
 *               (see below), overlay put on top of the chain, device
 *               switched to it -- all with the device drained
 *   cancel      undoes do, and invalidate if it ran (while the device is
 *               still held by the transaction): the device writes to the
 *               old top again, which is writable as before; a file the
 *               operation created is removed, a file it did not create is
 *               left as it was
 *   clean       after success reopens the old top read-only (it is a
 *               backing file now; done here and not in invalidate so
 *               that other operations of the same transaction on it can
 *               still finish their clean); frees everything (also the
 *               ExternalSnapshot itself)
 *
 * Each phase runs once, in order: check, do, invalidate, clean; or
 * cancel after do (also a do that failed: cancel removes what it left)
 * or after invalidate, then clean.  A phase out of order is refused with
 * an error and changes nothing.  Several external snapshots in one set
 * are cancelled newest first by the caller (the transaction engine).
 *
 * Where strata does better than QEMU (reference README points 1-4):
 *  - the new overlay records the old image by its absolute path;
 *  - a file that already exists under the snapshot-file name is not
 *    touched before invalidate: the overlay is created under a temporary
 *    name beside it and renamed over it in invalidate (the commit
 *    write); the replaced file is kept as a hidden hard link until clean,
 *    so cancel can put it back;
 *  - mode existing (and an overlay node) must not be smaller than the
 *    device, and its recorded backing file, if any, must be the device's
 *    current image; if it records none, invalidate writes the link into
 *    its header (the commit point), so the chain on disk is complete.
 */
#ifndef STRATA_EXTERNAL_SNAPSHOT_H
#define STRATA_EXTERNAL_SNAPSHOT_H

#include "block/block.h"
#include "block/block-backend.h"

G_BEGIN_DECLS

typedef enum {
    EXTERNAL_SNAPSHOT_MODE_ABSOLUTE_PATHS, /* create the overlay file */
    EXTERNAL_SNAPSHOT_MODE_EXISTING,       /* open an existing image */
} ExternalSnapshotMode;

typedef struct ExternalSnapshotParams {
    const char *snapshot_file;      /* the overlay's file name */
    const char *format;             /* NULL: "qcow2" */
    ExternalSnapshotMode mode;
    const char *snapshot_node_name; /* NULL: automatic */
    /* blockdev-snapshot: an already open node as the overlay instead of
     * snapshot_file (it must have no backing node). */
    BlockDriverState *overlay;
    /* An external revert: the overlay goes on top of this node of the
     * device's chain instead of the device's current image, which is
     * kept on disk as it is (strata extension; NULL: a snapshot). */
    BlockDriverState *revert_to;
} ExternalSnapshotParams;

typedef struct ExternalSnapshot ExternalSnapshot;

/* The targets claimed so far by one set of operations (a transaction). */
typedef struct ExternalSnapshotTargets ExternalSnapshotTargets;
ExternalSnapshotTargets *external_snapshot_targets_new(void);
void external_snapshot_targets_free(ExternalSnapshotTargets *t);

ExternalSnapshot *external_snapshot_new(BlockBackend *blk,
                                        const ExternalSnapshotParams *p);
/* claimed may be NULL (an operation on its own); on success the target
 * is added to it. */
bool external_snapshot_check(ExternalSnapshot *es,
                             ExternalSnapshotTargets *claimed, GError **errp);
bool external_snapshot_do(ExternalSnapshot *es, GError **errp);
bool external_snapshot_invalidate(ExternalSnapshot *es, GError **errp);
/* Reports an error only if something could not be put back (or if
 * called out of order); an error already in *errp is left as it was,
 * and every cancel error is logged. */
bool external_snapshot_cancel(ExternalSnapshot *es, GError **errp);
void external_snapshot_clean(ExternalSnapshot *es);

/*
 * Between check and do: the overlay goes on top of base instead of the
 * device's current image, and records base_filename as its backing file.
 * For a second external snapshot of one device in one transaction: base
 * is the first one's overlay, which the device will be on when this one
 * is invalidated (the transaction engine invalidates in list order).
 */
void external_snapshot_set_base(ExternalSnapshot *es, BlockDriverState *base,
                                const char *base_filename);
/* The absolute name the overlay has once the operation took effect. */
char *external_snapshot_get_final_filename(ExternalSnapshot *es);

/* The overlay node once do has run (no reference is passed). */
BlockDriverState *external_snapshot_get_overlay(ExternalSnapshot *es);
/* The device's top before the snapshot (issue 14: the intent witness). */
BlockDriverState *external_snapshot_get_old_top(ExternalSnapshot *es);
/* Before do: the device's image that a new overlay file will go on top
 * of (what the intent log marks as a witness), or NULL when the snapshot
 * creates no file or goes on another node. */
BlockDriverState *external_snapshot_get_witness(ExternalSnapshot *es);

/*
 * Crash-atomic transactions (issue 14).  Between check and do: do creates
 * the overlay under a temporary name beside snapshot-file even when no
 * file has that name yet, so nothing appears under it before invalidate
 * (whose rename is then the commit point).  After do, the temporary name
 * (NULL when the overlay was not created under one: mode existing, an
 * overlay node).
 */
void external_snapshot_set_staged(ExternalSnapshot *es);
const char *external_snapshot_get_staged_file(ExternalSnapshot *es);

/* All phases for one device: check, do, invalidate, clean (cancel on
 * failure). */
bool external_snapshot_run(BlockBackend *blk, const ExternalSnapshotParams *p,
                           GError **errp);

G_END_DECLS

#endif
