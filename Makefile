# Entry points: deps, all, test, demo, bench, clean.
# `make test` and `make demo` install what is missing (Debian, as root or
# through sudo), so a fresh machine needs nothing but make and this tree.

DEB_PKGS := clang erlang-nox erlang-dev erlang-common-test erlang-eunit erlang-edoc \
            erlang-tools erlang-dialyzer rebar3 libuv1-dev libcmocka-dev \
            liblmdb-dev libssl-dev openssl gcc make valgrind elixir
REBAR ?= rebar3
COOKIE ?= tarearbol_test
CT_NODE ?= tarearbol_ct
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: deps all layers unit ct test demo bench bench-store fuzz clean

deps:
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' \
	    || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "make deps: installing$$missing"; \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi

all:
	$(MAKE) -C c_src all
	$(REBAR) compile

# The layering rule of ARCHITECTURE.md, on the sources and the objects'
# symbols, and the test that shows the check fails when it should.
layers: deps
	$(MAKE) -C c_src all
	c_src/check_layers.sh c_src c_src/_build/rel
	sh test/layers/test_check_layers.sh

# Unit tests run under valgrind: any invalid access or leak fails them.
VALGRIND := valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect
unit: deps
	$(MAKE) -C c_src all asan unit
	@set -e; for t in c_src/_build/unit/test_*; do echo "== $$t"; $(VALGRIND) $$t; done

ct: deps
	$(MAKE) -C c_src all asan
	epmd -daemon
	TAREARBOL_CNODE_BIN=$(CURDIR)/c_src/_build/tarearbol_cnode_asan \
	  $(REBAR) ct --sname $(CT_NODE) --setcookie $(COOKIE)

test: deps
	$(MAKE) layers
	$(MAKE) unit
	$(MAKE) ct

# The main job: a live probe dashboard for a few seconds (test/demo/demo.erl).
demo: deps
	$(MAKE) all
	epmd -daemon
	mkdir -p _build/demo
	erlc -o _build/demo test/demo/demo.erl
	erl -noshell -sname demo_$$$$ -setcookie demo_$$$$ -pa _build/demo \
	  -pa _build/default/lib/tarearbol_cnode/ebin -eval 'demo:main()'

# Benchmarks (not part of test): figures printed and written to
# test/bench/results/. BENCH_SIZES overrides the worker counts of W1;
# BENCH_ONLY="w1 w3" runs some workloads (then no JSON is written). W5's
# peers do their handshakes with test/ct/raw_dist.erl.
BENCH_SIZES ?=
bench: deps
	$(MAKE) all
	epmd -daemon
	mkdir -p _build/bench
	erlc -o _build/bench test/bench/bench.erl test/bench/beam_baseline.erl test/bench/cluster_bench.erl test/ct/raw_dist.erl
	erl -noshell -sname bench_$$$$ -setcookie $(COOKIE) -pa _build/bench \
	  -eval 'bench:main(string:lexemes("$(BENCH_SIZES)", " "))'

# The store's commit throughput on the disk under _build (not part of
# test): records/s for batches of 1 to 1M records, and a load of 1M.
bench-store: deps
	$(MAKE) -C c_src store_bench
	rm -rf _build/bench-store && mkdir -p _build/bench-store
	c_src/_build/store_bench _build/bench-store
	rm -rf _build/bench-store

# The fuzzers (not part of test): FUZZ_SECONDS of libFuzzer for each of
# FUZZ_TARGETS, each on a copy of its seed corpus: fuzz_packet (the
# decoders) on test/fuzz/corpus, fuzz_node (the whole node behind a fake
# connection) on test/fuzz/corpus_node, fuzz_handshake (the accepting
# handshake, then the connection) on test/fuzz/corpus_hs. Findings go to
# _build/fuzz/TARGET/.
FUZZ_SECONDS ?= 600
FUZZ_TARGETS ?= fuzz_packet fuzz_node fuzz_handshake
fuzz: deps
	$(MAKE) -C c_src fuzz
	set -e; for t in $(FUZZ_TARGETS); do \
	  case $$t in fuzz_packet) seeds=test/fuzz/corpus ;; \
	    fuzz_node) seeds=test/fuzz/corpus_node ;; \
	    fuzz_handshake) seeds=test/fuzz/corpus_hs ;; \
	    *) echo "make fuzz: unknown target $$t"; exit 2 ;; esac; \
	  mkdir -p _build/fuzz/$$t/corpus && cp $$seeds/* _build/fuzz/$$t/corpus/; \
	  c_src/_build/$$t -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 \
	    -artifact_prefix=_build/fuzz/$$t/ _build/fuzz/$$t/corpus; \
	done

clean:
	$(MAKE) -C c_src clean
	rm -rf _build
