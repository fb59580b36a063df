# SPDX-License-Identifier: LGPL-2.1-or-later
# Thin wrapper around meson, in the spirit of QEMU's: `make`, `make demo`,
# `make check`, `make check-iotests`, `make bench`.  Release tools live in
# build/, the sanitized test build in build-check/.

BUILD       ?= build
CHECK_BUILD ?= build-check
FUZZ_BUILD  ?= build-fuzz
FUZZ_SECONDS ?= 600
FUZZ_FLAGS  ?=
MESON       ?= meson

.PHONY: all deps demo check check-iotests iotests-deps iotests-fetch bench \
	fuzz fuzz-deps clean

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

# QEMU's qemu-iotests (qcow2) with the release tools of $(BUILD) as qemu-img
# and qemu-io; Debian's qemu source package is fetched into $(BUILD)/iotests.
# IOTESTS_SET is plain, 106 or generic; IOTESTS="013 026" runs those tests instead;
# IOTESTS_JOBS tests at a time.  Fails on a failure that is not listed in
# tests/iotests/expected-failures.txt.
IOTESTS_SET  ?= 106
IOTESTS      ?=
IOTESTS_JOBS ?= 1

iotests-deps:
	@sh scripts/install-deps.sh --iotests

iotests-fetch: iotests-deps
	python3 scripts/check-iotests.py --build $(BUILD) --fetch-only

check-iotests: all iotests-deps
	python3 scripts/check-iotests.py --build $(BUILD) --set $(IOTESTS_SET) \
	    -j $(IOTESTS_JOBS) $(IOTESTS)

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
	python3 tests/bench/qmp.py --build $(BUILD)
	python3 tests/bench/precopy.py --build $(BUILD)
	python3 tests/bench/nbd.py --build $(BUILD)
	python3 tests/bench/rbd.py --build $(BUILD)
	python3 tests/bench/intent.py --build $(BUILD)

clean:
	rm -rf $(BUILD) $(CHECK_BUILD) $(FUZZ_BUILD)
