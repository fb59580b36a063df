/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The NBD server of strata-daemon: one listening socket (unix or TCP),
 * named exports of block nodes, and the clients connected to them.
 *
 * Threads: the listener has a thread of its own, each client a reader
 * thread and a pool of up to NBD_MAX_REQUESTS workers that run its
 * requests in parallel through the export's BlockBackend (so a
 * transaction's drain of that device waits for and holds them like a
 * guest's I/O).  Management calls (start, stop, export add/del, list)
 * come from the monitor's thread; they are serialised by one lock.
 *
 * The layer knows no QMP: the monitor passes typed arguments in and learns
 * about an export's end through the deleted hook.
 */
#ifndef STRATA_NBD_SERVER_H
#define STRATA_NBD_SERVER_H

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>

G_BEGIN_DECLS

/* Where the server listens: a unix socket path, or host and port. */
typedef struct NbdServerAddr {
    const char *unix_path;
    const char *host;        /* NULL or "": loopback */
    const char *port;
} NbdServerAddr;

/*
 * TLS credentials, QEMU's --object tls-creds-x509,id=ID,dir=DIR,
 * endpoint=server[,verify-peer=on|off]: DIR holds ca-cert.pem,
 * server-cert.pem and server-key.pem (and ca-crl.pem if present);
 * verify-peer (QEMU's default: on) requires a client certificate signed
 * by that CA.  Loaded at once: errors name the file.
 */
typedef struct NbdTlsCreds NbdTlsCreds;
bool nbd_tls_creds_add(const char *id, const char *dir, bool verify_peer,
                       GError **errp);
void nbd_tls_creds_remove_all(void);
/*
 * QEMU's --object authz-simple,id=ID,identity=DN: with tls-authz=ID only
 * a client whose certificate's distinguished name (as GnuTLS prints it,
 * which is what QEMU compares) is DN gets past TLS.
 */
bool nbd_authz_add(const char *id, const char *identity, GError **errp);
/* QMP object-del of either: refused for the credentials the running
 * server uses; QEMU's "object 'ID' not found" if there is no such id. */
bool nbd_object_exists(const char *id);
bool nbd_object_remove(const char *id, GError **errp);

/*
 * Starts listening.  max_connections 0 means no limit.  tls_creds: the
 * id of credentials added above (then clients must STARTTLS before
 * anything else); tls_authz: the id of an authz-simple object (needs
 * tls_creds).
 * Errors: "NBD server already running", QEMU's "No TLS credentials with
 * id '%s'", socket errors.
 */
bool nbd_server_start(const NbdServerAddr *addr, uint32_t max_connections,
                      const char *tls_creds, const char *tls_authz,
                      GError **errp);
bool nbd_server_is_running(void);
/*
 * Stops listening and shuts every export down (clients disconnected);
 * returns when they are gone.  "NBD server not running" if it is not.
 */
bool nbd_server_stop(GError **errp);
/* At exit: like stop, silent when no server runs (exports are closed
 * anyway). */
void nbd_server_shutdown(void);

typedef struct NbdExportOptions {
    const char *id;
    const char *node_name;
    const char *name;         /* NULL: the node-name */
    const char *description;  /* NULL: none */
    bool writable;
    bool writethrough;        /* every write FUA */
    const char *iothread;     /* strata has none: refused if given */
} NbdExportOptions;

/* QEMU's first two checks, "Invalid block export id" and "Block export
 * id '%s' is already in use", for a caller that checks the export type
 * next, as QEMU does. */
bool nbd_export_check_id(const char *id, GError **errp);

/* QEMU's checks and texts, in its order ("Invalid block export id",
 * "Block export id '%s' is already in use", the node lookup, "Cannot
 * export read-only node as writable", "NBD server not running", name and
 * description length, "NBD server already has export named '%s'"). */
bool nbd_export_add(const NbdExportOptions *opts, GError **errp);

typedef enum {
    NBD_EXPORT_DEL_SAFE,      /* refused while clients are connected */
    NBD_EXPORT_DEL_HARD,      /* clients disconnected */
} NbdExportDelMode;
/*
 * Starts the export's shutdown: it leaves the list (and the deleted hook
 * runs) once its last client is gone, at once if it has none.
 * "Export '%s' is not found", "Export '%s' is already shutting down",
 * "export '%s' still in use" (safe mode, clients connected).
 */
bool nbd_export_del(const char *id, NbdExportDelMode mode, GError **errp);

typedef struct NbdExportInfo {
    char *id;
    char *node_name;
    bool shutting_down;
} NbdExportInfo;
/* The exports, newest first (as QEMU lists them); free with
 * nbd_export_info_free. */
GPtrArray *nbd_export_list(void);
void nbd_export_info_free(NbdExportInfo *info);

/* Whether an export (even one shutting down) does its I/O on bs now:
 * blockdev-del refuses such a node ("Node %s is in use"). */
typedef struct BlockDriverState BlockDriverState;
bool nbd_node_in_use(BlockDriverState *bs);

/* Called with the id of each export when it is gone (any thread).
 * One hook; NULL removes it. */
void nbd_set_export_deleted_hook(void (*fn)(const char *id));

G_END_DECLS

#endif
