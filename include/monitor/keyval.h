/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * QEMU's keyval syntax for option strings (--blockdev, --chardev, the
 * embedding API's device options).
 */
#ifndef STRATA_MONITOR_KEYVAL_H
#define STRATA_MONITOR_KEYVAL_H

#include <glib.h>
#include <json-glib/json-glib.h>

G_BEGIN_DECLS

/*
 * "a=1,b.c=x,,y" (a first item without '=' is the value of implied_key,
 * which may be NULL) as a JSON object whose scalars are strings and whose
 * dotted keys are nested objects; the last of repeated keys wins.  NULL
 * with errp set (BLOCKDEV_ERROR, QEMU's texts: "Invalid parameter '%s'",
 * "Expected '=' after parameter '%s'", "Parameters '%s.*' used
 * inconsistently").
 */
JsonNode *monitor_keyval_parse(const char *text, const char *implied_key,
                               GError **errp);

G_END_DECLS

#endif
