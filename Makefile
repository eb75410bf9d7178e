# lvsprobe: the two commands that matter are `make demo` and `make test`.
# Both set up everything on a fresh Debian 12 machine as root (apt packages, a venv with every
# extra, `.[all,test]`, the lab's kernel cache) and are safe to run again (stamps make re-runs
# quick). `make test` also builds the wheel and runs the sidecar from a clean venv of it
# (tests/test_packaging.py; pip fetches the core dependencies from PyPI or its cache).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMPS := $(VENV)/.stamps

# Debian packages: the lab VM (qemu, busybox, kmod, ipvsadm, vsftpd, iproute2), the real peers
# the tests compare against (prometheus + promtool, node_exporter, tshark, chromium, wrk),
# strace to count a reader's syscalls.
APT_PACKAGES := qemu-system-x86 busybox-static kmod ipvsadm vsftpd iproute2 procps \
	prometheus prometheus-node-exporter tshark chromium wrk openssl ca-certificates \
	mmdebstrap podman runc uidmap keepalived strace

.PHONY: demo test setup apt venv lab-prepare lint typecheck unit lab-test bench clean

demo: setup
	$(BIN)/lvsprobe demo

test: setup lint typecheck
	$(BIN)/python -m pytest

setup: apt venv lab-prepare

apt: $(STAMPS)/apt
$(STAMPS)/apt: Makefile
	@mkdir -p $(STAMPS)
	@if [ "$$(id -u)" != 0 ]; then echo "make: run as root (apt packages are installed)"; exit 1; fi
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get update -q && \
	echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections && \
	apt-get install -y -q --no-install-recommends $(APT_PACKAGES) python3-venv
	@# Services that Debian starts on install are not ours to run: the tests start their own.
	command -v systemctl >/dev/null && systemctl disable --now vsftpd prometheus prometheus-node-exporter keepalived 2>/dev/null || true
	touch $@

venv: $(STAMPS)/venv
$(STAMPS)/venv: pyproject.toml $(STAMPS)/apt
	@mkdir -p $(STAMPS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[all,test]'
	touch $@

lab-prepare: $(STAMPS)/venv
	$(BIN)/lvsprobe lab prepare

lint: $(STAMPS)/venv
	$(BIN)/ruff check lvsprobe tests bench
	$(BIN)/ruff format --check lvsprobe tests bench

typecheck: $(STAMPS)/venv
	$(BIN)/mypy

unit: $(STAMPS)/venv
	$(BIN)/python -m pytest -m "not lab and not slow"

lab-test: setup
	$(BIN)/python -m pytest -m lab

bench: setup
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
