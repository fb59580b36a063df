# SPDX-License-Identifier: LGPL-2.1-or-later
# Thin wrapper around meson, in the spirit of QEMU's: `make`, `make demo`,
# `make check`, `make bench`.  Release tools live in build/, the sanitized
# test build in build-check/.

BUILD       ?= build
CHECK_BUILD ?= build-check
MESON       ?= meson

.PHONY: all deps demo check bench clean

all: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

deps:
	@sh scripts/install-deps.sh

$(BUILD)/build.ninja:
	$(MESON) setup $(BUILD) --buildtype=release -Db_ndebug=false

$(CHECK_BUILD)/build.ninja:
	$(MESON) setup $(CHECK_BUILD) --buildtype=debug -Dsanitizers=true

demo: all
	sh scripts/demo.sh $(BUILD)

check: deps $(CHECK_BUILD)/build.ninja
	ninja -C $(CHECK_BUILD)
	$(MESON) test -C $(CHECK_BUILD) --print-errorlogs --num-processes 2

bench: all
	python3 tests/bench/run.py --build $(BUILD)

clean:
	rm -rf $(BUILD) $(CHECK_BUILD)
