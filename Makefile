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

test: build-test
	cd $(TESTBUILD) && ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
		ctest --output-on-failure -j $(JOBS) --timeout 900

bench: build
	scripts/bench.sh $(BUILD)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(TESTBUILD)
