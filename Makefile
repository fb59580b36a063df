# SPDX-License-Identifier: LGPL-2.1-or-later
# Thin wrapper around meson, in the spirit of QEMU's: `make`, `make demo`,
# `make check`, `make bench`.  Release tools live in build/, the sanitized
# test build in build-check/.

BUILD       ?= build
CHECK_BUILD ?= build-check
FUZZ_BUILD  ?= build-fuzz
FUZZ_SECONDS ?= 600
FUZZ_FLAGS  ?=
MESON       ?= meson

.PHONY: all deps demo check bench fuzz fuzz-deps clean

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

# libFuzzer on the qcow2 target (clang, ASan+UBSan) for FUZZ_SECONDS;
# FUZZ_FLAGS adds libFuzzer flags, e.g. "-fork=1 -ignore_crashes=1".
$(FUZZ_BUILD)/build.ninja:
	CC=clang $(MESON) setup $(FUZZ_BUILD) --buildtype=debug \
	    -Dsanitizers=true -Dfuzzer=true -Dwerror=false \
	    -Dunit_tests=disabled -Dc_args=-Wno-unknown-warning-option

fuzz-deps:
	@sh scripts/install-deps.sh --fuzz

fuzz: fuzz-deps $(FUZZ_BUILD)/build.ninja
	ninja -C $(FUZZ_BUILD) tests/fuzz/fuzz-qcow2
	sh tests/fuzz/run-fuzz.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZ_FLAGS)

bench: all
	python3 tests/bench/run.py --build $(BUILD)
	python3 tests/bench/transaction.py --build $(BUILD)

clean:
	rm -rf $(BUILD) $(CHECK_BUILD) $(FUZZ_BUILD)
