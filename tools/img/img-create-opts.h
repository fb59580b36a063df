/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Image creation options (-o) as qemu-img knows them: the list each
 * format accepts (format options, then its protocol's), value checking,
 * the "Formatting ..." line and `-o help`.  Used by create and convert.
 */
#ifndef STRATA_IMG_CREATE_OPTS_H
#define STRATA_IMG_CREATE_OPTS_H

#include <glib.h>
#include <stdbool.h>

#include "block/block.h"

typedef struct ImgCreateOpts ImgCreateOpts;

/* The option list for creating `fmt` images; NULL (and errp set to
 * "Unknown file format 'X'") if strata has no such format. */
ImgCreateOpts *img_create_opts_new(const char *fmt, GError **errp);
void img_create_opts_free(ImgCreateOpts *o);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(ImgCreateOpts, img_create_opts_free)

/* Parses "k=v,k2=v2" (",," is a comma, a bare "k" means k=on), checking
 * names and value syntax with qemu's messages. */
bool img_create_opts_parse(ImgCreateOpts *o, const char *str, GError **errp);
/* The same, leaving out the names skip() accepts (amend's own options). */
bool img_create_opts_parse_except(ImgCreateOpts *o, const char *str,
                                  bool (*skip)(const char *name),
                                  GError **errp);
/* Sets one option; false if the format has no such option. */
bool img_create_opts_set(ImgCreateOpts *o, const char *name,
                         const char *value);
/* The value as set (sizes and numbers normalised to decimal), or NULL. */
const char *img_create_opts_get(ImgCreateOpts *o, const char *name);
void img_create_opts_unset(ImgCreateOpts *o, const char *name);

/* Prints " name=value" for every option set or defaulted, in qemu's order
 * (the text after "Formatting 'x', fmt=qcow2"). */
void img_create_opts_print(ImgCreateOpts *o);
/* The options set, as a BlockOpts for bdrv_create (caller unrefs). */
BlockOpts *img_create_opts_to_block_opts(ImgCreateOpts *o);

/* -o handling shared with qemu-img: an -o argument checked and joined to
 * those before it (false after the error message), and "help"/"?"
 * detection. */
bool img_add_option_list(char **options, const char *optarg);
bool img_has_help_option(const char *str);
/* Prints the options `fmt` accepts (with the protocol's when filename is
 * given); returns the exit status. */
int img_print_create_option_help(const char *filename, const char *fmt);

#endif
