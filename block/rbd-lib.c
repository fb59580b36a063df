/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The loader behind block/rbd-lib.h: librados and librbd opened with
 * dlopen() on the first rbd connection, every function the driver uses
 * looked up once.
 */
#define STRATA_RBD_LIB_NO_NAMES
#include "block/rbd-lib.h"

#include <dlfcn.h>

#include "block/block_int.h"

/* the libraries' sonames on Debian 12 (librados2, librbd1) */
#define LIBRADOS_SONAME "librados.so.2"
#define LIBRBD_SONAME "librbd.so.1"

static RBDLib table;
static bool loaded;
static char *load_error;        /* why loading failed, said every time */

static void *open_lib(const char *soname, const char *package)
{
    /* RTLD_NODELETE: librbd's threads outlive any close we could do */
    void *h = dlopen(soname, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);

    if (!h && !load_error) {
        load_error = g_strdup_printf("cannot load %s (is Debian's %s "
                                     "installed?): %s", soname, package,
                                     dlerror());
    }
    return h;
}

static void *find(void *rados, void *rbd, const char *name)
{
    void *lib = g_str_has_prefix(name, "rados_") ? rados : rbd;
    void *f = dlsym(lib, name);

    if (!f && !load_error) {
        load_error = g_strdup_printf("the Ceph library lacks %s", name);
    }
    return f;
}

static gpointer load_once(gpointer unused)
{
    void *rados = open_lib(LIBRADOS_SONAME, "librados2");
    void *rbd = open_lib(LIBRBD_SONAME, "librbd1");

    if (rados && rbd) {
        /* POSIX's way from dlsym's void * to a function pointer */
#define STRATA_RBD_FIND(f) *(void **)&table.f = find(rados, rbd, #f);
        STRATA_RBD_FUNCTIONS(STRATA_RBD_FIND)
#undef STRATA_RBD_FIND
        loaded = !load_error;
    }
    return NULL;
}

bool rbd_lib_load(GError **errp)
{
    static GOnce once = G_ONCE_INIT;

    g_once(&once, load_once, NULL);
    if (!loaded) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "RBD support is not available: %s", load_error);
    }
    return loaded;
}

const RBDLib *rbd_lib(void)
{
    g_assert(loaded);
    return &table;
}
