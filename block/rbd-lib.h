/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * librbd and librados, loaded when the first rbd device connects.
 *
 * Linking them into every program costs each start of strata-img,
 * strata-io and strata-daemon the Ceph libraries' static constructors
 * (measured: about 0.6 s of CPU per start under AddressSanitizer, where
 * LeakSanitizer scans everything they allocate; 10x a plain start), also
 * for the great majority of runs that never touch RBD -- as QEMU loads
 * its rbd driver as a module.  So the rbd driver calls the libraries
 * through a table that rbd_lib_load() fills with dlopen()/dlsym() on the
 * first connection.  The code of block/rbd*.c and blockdev/rbd-group.c
 * keeps librbd's own names: after this header, each name below stands for
 * the table's entry, and the table refuses to be read before it is
 * loaded (an assertion: a call that bypasses rbd_lib_load() fails loudly).
 */
#ifndef STRATA_BLOCK_RBD_LIB_H
#define STRATA_BLOCK_RBD_LIB_H

#include <stdbool.h>

#include <glib.h>
#include <rados/librados.h>
#include <rbd/librbd.h>

/* every librados/librbd function the driver calls */
#define STRATA_RBD_FUNCTIONS(X) \
    X(rados_cluster_fsid) \
    X(rados_conf_parse_env) \
    X(rados_conf_read_file) \
    X(rados_conf_set) \
    X(rados_connect) \
    X(rados_create) \
    X(rados_ioctx_create) \
    X(rados_ioctx_destroy) \
    X(rados_ioctx_get_id) \
    X(rados_ioctx_set_namespace) \
    X(rados_shutdown) \
    X(rbd_aio_create_completion) \
    X(rbd_aio_discard) \
    X(rbd_aio_flush) \
    X(rbd_aio_get_return_value) \
    X(rbd_aio_read) \
    X(rbd_aio_release) \
    X(rbd_aio_wait_for_complete) \
    X(rbd_aio_write) \
    X(rbd_aio_write_zeroes) \
    X(rbd_close) \
    X(rbd_create) \
    X(rbd_diff_iterate2) \
    X(rbd_flush) \
    X(rbd_get_features) \
    X(rbd_get_flags) \
    X(rbd_get_group) \
    X(rbd_get_size) \
    X(rbd_group_create) \
    X(rbd_group_image_add) \
    X(rbd_group_image_list) \
    X(rbd_group_image_list_cleanup) \
    X(rbd_group_image_remove) \
    X(rbd_group_info_cleanup) \
    X(rbd_group_list) \
    X(rbd_group_remove) \
    X(rbd_group_snap_create) \
    X(rbd_group_snap_list) \
    X(rbd_group_snap_list_cleanup) \
    X(rbd_group_snap_remove) \
    X(rbd_group_snap_rename) \
    X(rbd_group_snap_rollback) \
    X(rbd_image_spec_list_cleanup) \
    X(rbd_invalidate_cache) \
    X(rbd_list2) \
    X(rbd_namespace_exists) \
    X(rbd_open) \
    X(rbd_open_read_only) \
    X(rbd_resize) \
    X(rbd_snap_create) \
    X(rbd_snap_exists) \
    X(rbd_snap_get_group_namespace) \
    X(rbd_snap_get_namespace_type) \
    X(rbd_snap_group_namespace_cleanup) \
    X(rbd_snap_list) \
    X(rbd_snap_list_end) \
    X(rbd_snap_remove) \
    X(rbd_snap_rename) \
    X(rbd_snap_rollback) \
    X(rbd_snap_set_by_id) \

typedef struct RBDLib {
#define STRATA_RBD_MEMBER(f) __typeof__(f) *f;
    STRATA_RBD_FUNCTIONS(STRATA_RBD_MEMBER)
#undef STRATA_RBD_MEMBER
} RBDLib;

/* Loads both libraries once per process (thread-safe); false with errp
 * set when they are not installed or lack a function. */
bool rbd_lib_load(GError **errp);

/* The loaded table; asserts that rbd_lib_load() succeeded before. */
const RBDLib *rbd_lib(void);

#ifndef STRATA_RBD_LIB_NO_NAMES
#define rados_cluster_fsid (rbd_lib()->rados_cluster_fsid)
#define rados_conf_parse_env (rbd_lib()->rados_conf_parse_env)
#define rados_conf_read_file (rbd_lib()->rados_conf_read_file)
#define rados_conf_set (rbd_lib()->rados_conf_set)
#define rados_connect (rbd_lib()->rados_connect)
#define rados_create (rbd_lib()->rados_create)
#define rados_ioctx_create (rbd_lib()->rados_ioctx_create)
#define rados_ioctx_destroy (rbd_lib()->rados_ioctx_destroy)
#define rados_ioctx_get_id (rbd_lib()->rados_ioctx_get_id)
#define rados_ioctx_set_namespace (rbd_lib()->rados_ioctx_set_namespace)
#define rados_shutdown (rbd_lib()->rados_shutdown)
#define rbd_aio_create_completion (rbd_lib()->rbd_aio_create_completion)
#define rbd_aio_discard (rbd_lib()->rbd_aio_discard)
#define rbd_aio_flush (rbd_lib()->rbd_aio_flush)
#define rbd_aio_get_return_value (rbd_lib()->rbd_aio_get_return_value)
#define rbd_aio_read (rbd_lib()->rbd_aio_read)
#define rbd_aio_release (rbd_lib()->rbd_aio_release)
#define rbd_aio_wait_for_complete (rbd_lib()->rbd_aio_wait_for_complete)
#define rbd_aio_write (rbd_lib()->rbd_aio_write)
#define rbd_aio_write_zeroes (rbd_lib()->rbd_aio_write_zeroes)
#define rbd_close (rbd_lib()->rbd_close)
#define rbd_create (rbd_lib()->rbd_create)
#define rbd_diff_iterate2 (rbd_lib()->rbd_diff_iterate2)
#define rbd_flush (rbd_lib()->rbd_flush)
#define rbd_get_features (rbd_lib()->rbd_get_features)
#define rbd_get_flags (rbd_lib()->rbd_get_flags)
#define rbd_get_group (rbd_lib()->rbd_get_group)
#define rbd_get_size (rbd_lib()->rbd_get_size)
#define rbd_group_create (rbd_lib()->rbd_group_create)
#define rbd_group_image_add (rbd_lib()->rbd_group_image_add)
#define rbd_group_image_list (rbd_lib()->rbd_group_image_list)
#define rbd_group_image_list_cleanup (rbd_lib()->rbd_group_image_list_cleanup)
#define rbd_group_image_remove (rbd_lib()->rbd_group_image_remove)
#define rbd_group_info_cleanup (rbd_lib()->rbd_group_info_cleanup)
#define rbd_group_list (rbd_lib()->rbd_group_list)
#define rbd_group_remove (rbd_lib()->rbd_group_remove)
#define rbd_group_snap_create (rbd_lib()->rbd_group_snap_create)
#define rbd_group_snap_list (rbd_lib()->rbd_group_snap_list)
#define rbd_group_snap_list_cleanup (rbd_lib()->rbd_group_snap_list_cleanup)
#define rbd_group_snap_remove (rbd_lib()->rbd_group_snap_remove)
#define rbd_group_snap_rename (rbd_lib()->rbd_group_snap_rename)
#define rbd_group_snap_rollback (rbd_lib()->rbd_group_snap_rollback)
#define rbd_image_spec_list_cleanup (rbd_lib()->rbd_image_spec_list_cleanup)
#define rbd_invalidate_cache (rbd_lib()->rbd_invalidate_cache)
#define rbd_list2 (rbd_lib()->rbd_list2)
#define rbd_namespace_exists (rbd_lib()->rbd_namespace_exists)
#define rbd_open (rbd_lib()->rbd_open)
#define rbd_open_read_only (rbd_lib()->rbd_open_read_only)
#define rbd_resize (rbd_lib()->rbd_resize)
#define rbd_snap_create (rbd_lib()->rbd_snap_create)
#define rbd_snap_exists (rbd_lib()->rbd_snap_exists)
#define rbd_snap_get_group_namespace (rbd_lib()->rbd_snap_get_group_namespace)
#define rbd_snap_get_namespace_type (rbd_lib()->rbd_snap_get_namespace_type)
#define rbd_snap_group_namespace_cleanup (rbd_lib()->rbd_snap_group_namespace_cleanup)
#define rbd_snap_list (rbd_lib()->rbd_snap_list)
#define rbd_snap_list_end (rbd_lib()->rbd_snap_list_end)
#define rbd_snap_remove (rbd_lib()->rbd_snap_remove)
#define rbd_snap_rename (rbd_lib()->rbd_snap_rename)
#define rbd_snap_rollback (rbd_lib()->rbd_snap_rollback)
#define rbd_snap_set_by_id (rbd_lib()->rbd_snap_set_by_id)
#endif

#endif
