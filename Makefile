# The two commands: `make demo` and `make test`. Both install what is missing first.
SHELL := /bin/bash
JOBS  ?= $(shell nproc)
SUDO  := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
CMAKE_FLAGS ?=
WERROR := $(if $(MPX_WERROR),-DMPX_WERROR=$(MPX_WERROR),)

BUILD_PKGS := build-essential cmake pkg-config libcereal-dev libgtest-dev libgmock-dev libbenchmark-dev libssl-dev python3 libopenmpi-dev openmpi-bin
FUZZ_PKGS  := clang libclang-rt-14-dev
BENCH_PKGS := libboost-dev python3-matplotlib python3-mpi4py

.PHONY: all deps deps-fuzz deps-bench configure-release build demo test test-asan test-tsan fuzz bench format clean

all: build

# Installs the Debian packages that are not installed yet (apt-get; via sudo when not root).
define install_missing
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | \
	  grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "Installing missing packages: $$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
endef

deps:
	$(call install_missing,$(BUILD_PKGS))
deps-fuzz:
	$(call install_missing,$(FUZZ_PKGS))
deps-bench:
	$(call install_missing,$(BENCH_PKGS))

# Configured every time (about a second), so that a changed CMakeLists or flag is seen.
configure-release: deps
	cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release $(WERROR) $(CMAKE_FLAGS)

build: configure-release
	cmake --build build/release -j $(JOBS)

demo: configure-release
	cmake --build build/release -j $(JOBS) --target mpx-demo
	./build/release/mpx-demo

test: deps
	cmake -S . -B build/test -DCMAKE_BUILD_TYPE=RelWithDebInfo $(WERROR) $(CMAKE_FLAGS)
	cmake --build build/test -j $(JOBS)
	cd build/test && ctest --output-on-failure -j $(JOBS) --timeout 300

test-asan: deps
	cmake -S . -B build/asan -DCMAKE_BUILD_TYPE=Debug -DMPX_SANITIZE=address,undefined \
	  -DMPX_BUILD_BENCH=OFF -DMPX_BUILD_DEMO=OFF $(WERROR) $(CMAKE_FLAGS)
	cmake --build build/asan -j $(JOBS)
	cd build/asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -j $(JOBS) --timeout 600

# ThreadSanitizer over the tests labelled `concurrency` (CMakeLists.txt): the whole suite
# under TSan is too slow for CI's 2 cores. Any report fails the test (exit code 66);
# tests/tsan.supp lists the explained ones, each with its reason.
test-tsan: deps
	cmake -S . -B build/tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMPX_SANITIZE=thread \
	  -DMPX_BUILD_BENCH=OFF -DMPX_BUILD_DEMO=OFF -DMPX_BUILD_EXAMPLES=OFF $(WERROR) $(CMAKE_FLAGS)
	cmake --build build/tsan -j $(JOBS) --target concurrency_tests
	cd build/tsan && \
	  TSAN_OPTIONS=suppressions=$(CURDIR)/tests/tsan.supp:die_after_fork=0:second_deadlock_stack=1 \
	  ctest -L concurrency --output-on-failure -j $(JOBS) --timeout 600

FUZZ_SECONDS ?= 60
fuzz: deps deps-fuzz
	CXX=clang++ cmake -S . -B build/fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMPX_FUZZ=ON \
	  -DMPX_BUILD_TESTS=OFF -DMPX_BUILD_EXAMPLES=OFF -DMPX_BUILD_BENCH=OFF -DMPX_BUILD_DEMO=OFF \
	  -DMPX_INSTALL=OFF $(WERROR) $(CMAKE_FLAGS)
	cmake --build build/fuzz -j $(JOBS)
	@set -o pipefail; for f in build/fuzz/fuzz/*_fuzz; do \
	  [ -x "$$f" ] || continue; \
	  echo "== $$f ($(FUZZ_SECONDS) s)"; \
	  mkdir -p build/fuzz/corpus/$$(basename $$f); \
	  "$$f" -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -malloc_limit_mb=64 -print_final_stats=1 \
	    build/fuzz/corpus/$$(basename $$f) fuzz/seeds 2>&1 | tail -n 15 || exit 1; \
	done

bench: deps-bench configure-release
	cmake --build build/release -j $(JOBS) --target mpx-bench-all
	./bench/compare

format:
	git ls-files '*.hpp' '*.cpp' | xargs clang-format -i

clean:
	rm -rf build
