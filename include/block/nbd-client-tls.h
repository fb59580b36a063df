/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * TLS credentials for the NBD client driver (driver=nbd,tls-creds=ID),
 * given as QEMU gives them: --object tls-creds-x509,id=ID,dir=DIR
 * [,endpoint=client][,verify-peer=on|off] (DIR holds ca-cert.pem and,
 * optionally, client-cert.pem and client-key.pem) or --object
 * tls-creds-psk,id=ID,dir=DIR[,username=NAME] (DIR holds keys.psk; the
 * user is "qemu" unless named).  libnbd does the handshake with them.
 */
#ifndef STRATA_BLOCK_NBD_CLIENT_TLS_H
#define STRATA_BLOCK_NBD_CLIENT_TLS_H

#include <glib.h>
#include <stdbool.h>

G_BEGIN_DECLS

typedef struct NbdClientCreds {
    char *id;
    bool psk;             /* tls-creds-psk, else tls-creds-x509 */
    bool server;          /* endpoint=server: refused by the client */
    char *dir;
    bool verify_peer;     /* x509: check the server's certificate */
    char *username;       /* psk */
} NbdClientCreds;

/* Registers credentials from a parsed --object (its qom-type one of the
 * two); false, errp set, with QEMU's texts for what is missing. */
bool nbd_client_creds_add(GHashTable *fields, GError **errp);
/* The credentials a client may use under id; NULL, errp set with QEMU's
 * texts, for none, or for server credentials. */
const NbdClientCreds *nbd_client_creds_for_client(const char *id,
                                                  GError **errp);

G_END_DECLS

#endif
