/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * strata-img's --output=json printing (see img-json.h).
 */
#include <stdio.h>

#include "img-json.h"

void img_json_print(JsonNode *node)
{
    g_autofree char *s = json_writer_pretty(node);

    printf("%s\n", s);
}
