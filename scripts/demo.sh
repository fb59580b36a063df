#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# The demo: builds a small set of images with strata's tools and verifies
# them with qemu-img.  Grows with the project (daemon, QMP, HMP).
set -e
BUILD=${1:-build}
echo "demo: tools not built yet"
