# pgwarden: the two commands of the quick start are `make up` and `make check`.
BUILD_DIR ?= build
BUILD_TYPE ?= RelWithDebInfo
JOBS ?= $(shell nproc)
# Where `make up` keeps the local cluster. It must be reachable by the OS user
# `postgres` (a checkout under /root is not), hence /var/tmp by default.
CLUSTER_DIR ?= /var/tmp/pgwarden-cluster
NODES ?= 3

.PHONY: all deps build up down status check unit integration format format-check clean

all: build

deps:
	@bash scripts/install-deps.sh

$(BUILD_DIR)/CMakeCache.txt:
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)

build: deps $(BUILD_DIR)/CMakeCache.txt
	cmake --build $(BUILD_DIR) -j $(JOBS)

up: build
	$(BUILD_DIR)/pgwarden up --nodes $(NODES) --dir $(CLUSTER_DIR)

down:
	$(BUILD_DIR)/pgwarden down --dir $(CLUSTER_DIR)

status:
	$(BUILD_DIR)/pgwarden status --dir $(CLUSTER_DIR)

check: build format-check
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) --timeout 900

unit: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) -L unit

integration: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) -L integration

format:
	clang-format -i $$(git ls-files '*.cpp' '*.h')

format-check:
	@bad=$$(for f in $$(git ls-files '*.cpp' '*.h'); do \
	  clang-format --dry-run -Werror "$$f" >/dev/null 2>&1 || echo "$$f"; done); \
	if [ -n "$$bad" ]; then echo "not clang-formatted (run make format):"; echo "$$bad"; exit 1; fi

clean:
	rm -rf $(BUILD_DIR)
