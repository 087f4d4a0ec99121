# seqcollector: one command to set up, one to test. See README.md.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
FIXTURE := fixtures/journals/one-market.jsonl

.PHONY: setup test lint bench replay fixture contracts sim soak soak-props clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

setup: $(PY)  ## install every Python and npm dependency (.venv, node_modules: solc, anvil)
	$(PY) -m pip install --quiet -e '.[dev,sim]'
	npm ci --no-audit --no-fund --loglevel=error
	@$(BIN)/seqcollector --version

test: lint  ## lint, type-check the core, then every test (unit, property, integration, e2e); 3 workers on 2 cores: the simulations wait on loopback I/O about half the time
	$(BIN)/pytest -q -n 3 -p no:cacheprovider

lint:  ## ruff on everything, mypy --strict on the whole package (core, runtime, sources, api)
	$(BIN)/ruff check seqcollector sim tests bench
	$(BIN)/ruff format --check seqcollector sim tests bench
	$(BIN)/mypy --strict seqcollector

bench:  ## benchmarks: figures and ratios against a baseline measured in the same run
	$(PY) -m bench.run_all

replay:  ## the main job on embedded defaults: replay the fixture journal into the embedded store
	$(BIN)/seqcollector replay $(FIXTURE)

fixture:  ## regenerate the fixture journal (deterministic; the digest test pins its effects)
	$(BIN)/seqcollector synth --out $(FIXTURE) --seed 7 --blocks 260 --batch-size 4 \
		--reorg 1105:6 --attestor

.PHONY: contracts
contracts:  ## recompile fixtures/contracts/{ProtocolState,DataMarket}.sol into their .json artifacts (solc-js)
	node fixtures/contracts/compile.mjs

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

sim:  ## the main job on embedded defaults: a simulated world with every fault, checked
	$(BIN)/seqcollector sim --seed 1 --faults all --out out/sim

soak:  ## 1,000,000 simulated blocks, every fault kind, in one process: RSS, fds and tasks sampled per segment, every invariant (python -m sim.soak --help)
	$(PY) -m sim.soak --blocks 1000000

soak-props:  ## longer property runs of the simulation harness (1,000 crash points, 200 fault mixes)
	SEQ_SOAK=1 $(BIN)/pytest -q -n 2 -p no:cacheprovider tests/sim/test_sim_fast.py -k "anywhere or mixes"
