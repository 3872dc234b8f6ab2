# Two commands on a fresh machine (Debian 12, root or a user with python3-venv):
#   make render   the main job: render the example cluster (and the lab specs into provision/)
#   make test     the fast test suite, through tox
# The lab (three VMs; issue 3): make lab-ubuntu / make lab-centos.

VENV ?= .venv
BIN := $(VENV)/bin
EXAMPLE := build/example

.PHONY: render test bench lab-ubuntu lab-centos lab-centos-dm clean

$(BIN)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]' 'tox>=4'
	touch $@

render: $(BIN)/.installed
	@test -f $(EXAMPLE)/cluster.yml || $(BIN)/cablab-cluster init $(EXAMPLE)/cluster.yml
	@test -f $(EXAMPLE)/github-client-secret || { \
	  echo "example: writing a placeholder $(EXAMPLE)/github-client-secret (put your OAuth app's secret there)"; \
	  umask 077; echo placeholder-client-secret > $(EXAMPLE)/github-client-secret; }
	$(BIN)/cablab-cluster validate $(EXAMPLE)/cluster.yml
	$(BIN)/cablab-cluster plan $(EXAMPLE)/cluster.yml
	$(BIN)/cablab-cluster render $(EXAMPLE)/cluster.yml --out $(EXAMPLE)/rendered
	$(BIN)/cablab-cluster render lab/ubuntu.yml --out provision/ubuntu
	$(BIN)/cablab-cluster render lab/centos.yml --out provision/centos
	$(BIN)/cablab-cluster render lab/centos-dm.yml --out provision/centos-dm

test: $(BIN)/.installed
	$(BIN)/tox

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/render.py

# The Ubuntu lab runs the fault drills after verify (~12 min more; `make lab-ubuntu LAB_ARGS=` skips them).
LAB_ARGS ?= --drills
# The centos labs: no drills unless asked (`make lab-centos CENTOS_ARGS=--drills`: + manager_lost).
CENTOS_ARGS ?=

lab-ubuntu: $(BIN)/.installed
	$(BIN)/tox -e ubuntu -- $(LAB_ARGS)

lab-centos: $(BIN)/.installed
	$(BIN)/tox -e centos -- $(CENTOS_ARGS)

# The centos lab with the seed's devicemapper thin pool (lab/centos-dm.yml); not in CI.
lab-centos-dm: $(BIN)/.installed
	$(BIN)/tox -e centos-dm -- $(CENTOS_ARGS)

clean:
	rm -rf build .tox
