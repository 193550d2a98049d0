# posbus front door. `make demo` runs the whole system locally; `make test` runs every test.
# Both install missing Debian packages first (scripts/deps.sh).
BUILD      ?= build
TESTBUILD  ?= build-test
JOBS       ?= $(shell nproc)

.PHONY: all deps build build-test demo test bench format clean

all: build

deps:
	@scripts/deps.sh

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPOSBUS_SANITIZE=OFF >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

# Tests run against an AddressSanitizer + UBSan build so memory errors fail the run.
build-test: deps
	cmake -S . -B $(TESTBUILD) -DCMAKE_BUILD_TYPE=Debug -DPOSBUS_SANITIZE=ON >/dev/null
	cmake --build $(TESTBUILD) -j $(JOBS)

demo: build
	scripts/demo.sh $(BUILD)

# LeakSanitizer is on: a leak in a test program, or in a service stopped with SIGTERM by the
# harnesses, fails the run. tests/lsan.supp lists the few reports from libraries we do not own.
SANITIZER_ENV = ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

test: build-test
	cd $(TESTBUILD) && $(SANITIZER_ENV) ctest --output-on-failure -j $(JOBS) --timeout 900

bench: build
	scripts/bench.sh $(BUILD)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(TESTBUILD)
