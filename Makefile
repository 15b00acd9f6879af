# llmq — `make run` starts a private farm and streams a sample job; `make test` runs every test.
SWIFT ?= swift
DEBS := redis-server libhiredis-dev libcurl4-openssl-dev pkg-config python3 python3-jsonschema python3-yaml
BENCH_DEBS := nginx-light gcc python3-venv
# promtool (from prometheus) checks the alert rules and the metric names of a real scrape in Ops/validate.py;
# chromium is the real browser of the gateway's page test (GatewayTests, which fail when it is missing).
TEST_DEBS := prometheus chromium
# The producers of Ops/clients run in ProducerExamplesTests, each with its own interpreter and Redis client.
TEST_DEBS += python3-redis golang-go golang-github-gomodule-redigo-dev ruby ruby-redis redis-tools jq nodejs
LLMQ := .build/debug/llmq
SHARED ?= ../shared

.PHONY: all deps pydeps testdeps bench-deps build release run test bench bench-gateway chaos fuzz clean

all: deps build

# Installs the Debian packages llmq needs, when any is missing (as root, or through sudo).
deps:
	@missing=$$(for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

testdeps:
	@missing=$$(for p in $(TEST_DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		($$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing) || \
			echo "could not install $$missing: Ops/validate.py skips its promtool checks, the gateway's browser test fails"; \
	fi

# The Kubernetes manifests in Ops/ are checked against their schemas with kubernetes-validate (PyPI, works offline);
# the gateway's tests drive it with the official openai package and Chromium through websockets (DevTools protocol).
PYDEPS := pyyaml jsonschema kubernetes-validate openai websockets
pydeps:
	@python3 -c "import yaml, jsonschema, kubernetes_validate, openai, websockets" 2>/dev/null || \
		python3 -m pip install -q --disable-pip-version-check $(PYDEPS) || \
		python3 -m pip install -q --disable-pip-version-check --break-system-packages $(PYDEPS)

bench-deps:
	@missing=$$(for p in $(BENCH_DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release

run: build
	$(LLMQ) dev

# One test at a time: many suites start farms, clusters and sentinels of real processes, and on a 2-core machine
# running them side by side turned their deadlines into a measure of the machine's load (about 15 minutes in all).
test: build pydeps testdeps
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build --no-parallel

bench: release bench-deps
	Ops/bench/run.sh $(SHARED)/bench
	# Redis Cluster: delivered chunks/s with 1 and 3 masters (see BENCHMARKS.md, "Redis Cluster").
	Ops/bench/cluster.sh $(SHARED)/bench

# The gateway's added latency over the Redis path and its streamed requests/s beside LiteLLM's proxy
# (used when `litellm` is on PATH or LITELLM names it: pip install 'litellm[proxy]').
bench-gateway: release bench-deps
	Ops/bench/gateway.sh $(SHARED)/bench

chaos: build
	LLMQ_CHAOS_SIZE=full $(SWIFT) test --filter Chaos

# Hostile jobs against a live farm at full size (make test runs the same suite with about 400).
fuzz: build
	$(SWIFT) build --build-tests
	LLMQ_FUZZ_SIZE=10000 $(SWIFT) test --skip-build --filter HostileJobFuzz

clean:
	rm -rf .build
