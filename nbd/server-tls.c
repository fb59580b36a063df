/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * TLS for the NBD server on GnuTLS: the x509 credentials of
 * --object tls-creds-x509 (QEMU's file names in the credentials
 * directory), and the server side of STARTTLS: the TLS handshake on the
 * client's socket and, with verify-peer, the check of the client's
 * certificate against the CA, before any export is shown.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "nbd/server-int.h"
#include "blockdev/registry.h"
#include "block/log.h"

struct NbdTlsCreds {
    char *id;
    gnutls_certificate_credentials_t cred;
    bool verify_peer;
};

static GPtrArray *all_creds;   /* NbdTlsCreds *; the monitor's thread */
static GHashTable *authz;      /* id -> identity; the monitor's thread */

static bool tls_fail(GError **errp, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static bool tls_fail(GError **errp, const char *fmt, ...)
{
    g_autofree char *msg = NULL;
    va_list ap;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error_literal(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC, msg);
    return false;
}

static void creds_free(NbdTlsCreds *c)
{
    if (c->cred) {
        gnutls_certificate_free_credentials(c->cred);
    }
    g_free(c->id);
    g_free(c);
}

NbdTlsCreds *nbd_tls_creds_find(const char *id)
{
    for (guint i = 0; all_creds && i < all_creds->len; i++) {
        NbdTlsCreds *c = g_ptr_array_index(all_creds, i);
        if (!strcmp(c->id, id)) {
            return c;
        }
    }
    return NULL;
}

/* dir/name, which must be readable (QEMU's text otherwise). */
static char *creds_file(const char *dir, const char *name, bool required,
                        GError **errp)
{
    char *path = g_build_filename(dir, name, NULL);

    if (access(path, R_OK) < 0) {
        if (required || errno != ENOENT) {
            tls_fail(errp, "Unable to access credentials %s: %s", path,
                     g_strerror(errno));
        }
        g_free(path);
        return NULL;
    }
    return path;
}

static bool creds_load(NbdTlsCreds *c, const char *dir, GError **errp)
{
    g_autofree char *ca = creds_file(dir, "ca-cert.pem", true, errp);
    g_autofree char *cert = ca ? creds_file(dir, "server-cert.pem", true,
                                            errp) : NULL;
    g_autofree char *key = cert ? creds_file(dir, "server-key.pem", true,
                                             errp) : NULL;
    g_autofree char *crl = NULL;
    int ret;

    if (!key) {
        return false;
    }
    ret = gnutls_certificate_allocate_credentials(&c->cred);
    if (ret < 0) {
        return tls_fail(errp, "Cannot allocate credentials: %s",
                        gnutls_strerror(ret));
    }
    ret = gnutls_certificate_set_x509_trust_file(c->cred, ca,
                                                 GNUTLS_X509_FMT_PEM);
    if (ret < 0) {
        return tls_fail(errp, "Cannot load CA certificate %s: %s", ca,
                        gnutls_strerror(ret));
    }
    ret = gnutls_certificate_set_x509_key_file(c->cred, cert, key,
                                               GNUTLS_X509_FMT_PEM);
    if (ret < 0) {
        return tls_fail(errp, "Cannot load certificate %s & key %s: %s",
                        cert, key, gnutls_strerror(ret));
    }
    crl = creds_file(dir, "ca-crl.pem", false, NULL);
    if (crl) {
        ret = gnutls_certificate_set_x509_crl_file(c->cred, crl,
                                                   GNUTLS_X509_FMT_PEM);
        if (ret < 0) {
            return tls_fail(errp, "Cannot load CRL %s: %s", crl,
                            gnutls_strerror(ret));
        }
    }
    gnutls_certificate_set_known_dh_params(c->cred, GNUTLS_SEC_PARAM_MEDIUM);
    return true;
}

bool nbd_tls_creds_add(const char *id, const char *dir, bool verify_peer,
                       GError **errp)
{
    NbdTlsCreds *c;

    if (nbd_tls_creds_find(id)) {
        return tls_fail(errp, "attempt to add duplicate property '%s' to "
                        "object (type 'container')", id);
    }
    c = g_new0(NbdTlsCreds, 1);
    c->id = g_strdup(id);
    c->verify_peer = verify_peer;
    if (!creds_load(c, dir, errp)) {
        creds_free(c);
        return false;
    }
    if (!all_creds) {
        all_creds = g_ptr_array_new_with_free_func(
            (GDestroyNotify)creds_free);
    }
    g_ptr_array_add(all_creds, c);
    return true;
}

void nbd_tls_creds_remove_all(void)
{
    g_clear_pointer(&all_creds, g_ptr_array_unref);
    g_clear_pointer(&authz, g_hash_table_unref);
}

bool nbd_authz_add(const char *id, const char *identity, GError **errp)
{
    if (!authz) {
        authz = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                      g_free);
    }
    if (g_hash_table_contains(authz, id) || nbd_tls_creds_find(id)) {
        return tls_fail(errp, "attempt to add duplicate property '%s' to "
                        "object (type 'container')", id);
    }
    g_hash_table_insert(authz, g_strdup(id), g_strdup(identity));
    return true;
}

bool nbd_object_exists(const char *id)
{
    return nbd_tls_creds_find(id) || nbd_authz_find(id);
}

bool nbd_object_remove(const char *id, GError **errp)
{
    NbdTlsCreds *c = nbd_tls_creds_find(id);

    if (c) {
        /* the running server reads them at every client's handshake */
        if (nbd_server_tls_creds() == c) {
            return tls_fail(errp, "object '%s' is in use, can not be "
                            "deleted", id);
        }
        g_ptr_array_remove(all_creds, c);
        return true;
    }
    /* a running server copied the identity when it started */
    if (authz && g_hash_table_remove(authz, id)) {
        return true;
    }
    return tls_fail(errp, "object '%s' not found", id);
}

const char *nbd_authz_find(const char *id)
{
    return authz ? g_hash_table_lookup(authz, id) : NULL;
}

/* tls-authz: the peer's distinguished name must be the identity. */
static bool check_identity(gnutls_session_t s, const char *identity)
{
    unsigned int n = 0;
    const gnutls_datum_t *certs = gnutls_certificate_get_peers(s, &n);
    gnutls_x509_crt_t crt;
    char dn[1024];
    size_t len = sizeof(dn);
    bool ok = false;

    if (!certs || !n || gnutls_x509_crt_init(&crt) < 0) {
        strata_warning("NBD client refused: no certificate to authorize");
        return false;
    }
    if (gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER) >= 0 &&
        gnutls_x509_crt_get_dn(crt, dn, &len) >= 0) {
        ok = !strcmp(dn, identity);
        if (!ok) {
            strata_warning("NBD client refused: '%s' is not authorized", dn);
        }
    }
    gnutls_x509_crt_deinit(crt);
    return ok;
}

/* The peer's certificate, checked against the CA (verify-peer). */
static bool check_peer(gnutls_session_t s)
{
    unsigned int status = 0;
    int ret = gnutls_certificate_verify_peers2(s, &status);

    if (ret < 0) {
        strata_warning("NBD client refused: cannot verify its "
                       "certificate: %s", gnutls_strerror(ret));
        return false;
    }
    if (status) {
        gnutls_datum_t why = { 0 };

        gnutls_certificate_verification_status_print(
            status, GNUTLS_CRT_X509, &why, 0);
        strata_warning("NBD client refused: %s",
                       why.data ? (char *)why.data : "bad certificate");
        gnutls_free(why.data);
        return false;
    }
    return true;
}

bool nbd_tls_start(NbdClient *c, NbdTlsCreds *creds)
{
    g_autofree char *identity = NULL;
    gnutls_session_t s;
    int ret;

    if (gnutls_init(&s, GNUTLS_SERVER) < 0) {
        return false;
    }
    if (gnutls_set_default_priority(s) < 0 ||
        gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, creds->cred) < 0) {
        gnutls_deinit(s);
        return false;
    }
    if (creds->verify_peer) {
        gnutls_certificate_server_set_request(s, GNUTLS_CERT_REQUIRE);
    }
    gnutls_transport_set_int(s, c->fd);
    do {
        ret = gnutls_handshake(s);
    } while (ret < 0 && !gnutls_error_is_fatal(ret) &&
             ret != GNUTLS_E_AGAIN);
    if (ret < 0) {
        strata_warning("NBD client refused: TLS handshake failed: %s",
                       gnutls_strerror(ret));
        gnutls_deinit(s);
        return false;
    }
    identity = nbd_server_authz_identity();
    if ((creds->verify_peer && !check_peer(s)) ||
        (identity && !check_identity(s, identity))) {
        gnutls_deinit(s);
        return false;
    }
    c->tls = s;
    return true;
}

void nbd_tls_end(NbdClient *c)
{
    if (c->tls) {
        gnutls_deinit(c->tls);
        c->tls = NULL;
    }
}
