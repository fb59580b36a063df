/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * --object for strata-img and strata-io: `secret` (keys of encrypted
 * images, crypto-secret.c) and the NBD client's TLS credentials
 * (`tls-creds-x509`, `tls-creds-psk`: nbd-client-tls.c).  Any other type
 * is refused: ignoring it would change what the command does.
 */
#ifndef STRATA_BLOCK_OBJECTS_H
#define STRATA_BLOCK_OBJECTS_H

#include <glib.h>
#include <stdbool.h>

G_BEGIN_DECLS

bool bdrv_object_add(const char *spec, GError **errp);

/* "a=b,c=d" (",," stands for a comma; a first item without '=' is the
 * qom-type) as key -> value; a repeated key keeps its last value, as in
 * QEMU.  NULL, errp set, for an item without '='. */
GHashTable *bdrv_object_spec_parse(const char *spec, GError **errp);

G_END_DECLS

#endif
