/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The list of built-in drivers, registered on first use. */
#include "block/drivers.h"

void bdrv_register_all(void)
{
    bdrv_register(&bdrv_file);
    bdrv_register(&bdrv_host_device);
    bdrv_register(&bdrv_host_cdrom);
    bdrv_register(&bdrv_raw);
    bdrv_register(&bdrv_qcow2);
    bdrv_register(&bdrv_luks);
    bdrv_register(&bdrv_blkdebug);
    bdrv_register(&bdrv_compress);
    bdrv_register(&bdrv_copy_on_read);
    bdrv_register(&bdrv_null_co);
    bdrv_register(&bdrv_quorum);
#ifdef HAVE_LIBNBD
    bdrv_register(&bdrv_nbd);      /* issue 13: NBD client on libnbd */
#endif
#ifdef CONFIG_RBD
    bdrv_register(&bdrv_rbd);
#endif
}
