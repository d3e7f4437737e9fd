# Herald: the two commands are `make run` and `make test`.
GO       ?= go
FUZZTIME ?= 2m
SMOKE_FUZZTIME ?= 10s
SOAK_DURATION ?= 1h
SOAK_INTERVAL ?= 1m

.PHONY: run build test deps lint unit fuzz fuzz-smoke chaos soak clean bench

## run: start Herald with the built-in defaults (in-memory broker, dev app)
run:
	$(GO) run ./cmd/herald serve

## build: build bin/herald
build:
	$(GO) build -o bin/herald ./cmd/herald

## deps: install what the tests need (Node packages from the lockfile, ...)
deps:
	./scripts/deps.sh

## test: every test, with -race, after installing what the tests need
test: deps lint unit chaos fuzz-smoke

lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './tools/*')); \
	if [ -n "$$unformatted" ]; then echo "gofmt: not formatted:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags 'chaos soak' ./test/chaos

unit:
	$(GO) test -race -count=1 -timeout 15m ./...

## chaos: faults and load with real processes (part of make test, about 3 minutes);
## figures in bin/chaos-report.{md,json}
chaos:
	$(GO) test -tags chaos -count=1 -timeout 10m -v ./test/chaos

## soak: SOAK_DURATION (1h) at half load, RSS and goroutines sampled every
## SOAK_INTERVAL (1m) and checked flat; not part of make test. bin/soak-report.{md,json}
soak:
	SOAK_DURATION=$(SOAK_DURATION) SOAK_INTERVAL=$(SOAK_INTERVAL) $(GO) test -tags soak -count=1 -timeout 0 -run TestSoak -v ./test/chaos

## fuzz-smoke: a short run of every fuzz target (part of make test)
fuzz-smoke:
	FUZZTIME=$(SMOKE_FUZZTIME) ./scripts/fuzz.sh

## fuzz: a long run of every fuzz target (FUZZTIME, default 2m each)
fuzz:
	FUZZTIME=$(FUZZTIME) ./scripts/fuzz.sh

clean:
	rm -rf bin test/conformance/node_modules

## bench: the performance suite of BENCHMARKS.md (about 25 min per round on 2 cores):
## Herald, Herald on Redis and the raw reference server, plus any other
## Pusher-compatible server given as PEERS='--peer name=command-with-{port} ...';
## results, summary.md and charts in BENCH_OUT.
BENCH_OUT   ?= bench-results
BENCH_FLAGS ?= --rounds 3
PEERS       ?=
bench:
	$(GO) build -o bin/herald ./cmd/herald
	bin/herald bench suite $(BENCH_FLAGS) --targets herald,herald-redis,raw --out $(BENCH_OUT) $(PEERS)
	cd tools/benchcharts && $(GO) run . -in $(abspath $(BENCH_OUT))/metrics.json -out $(abspath $(BENCH_OUT))
