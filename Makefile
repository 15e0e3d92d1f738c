# PruneLab: `make run` installs and starts the app, `make test` installs and runs the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
VENV_GIB := 8
FASHION := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
QT_LIBS := libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxkbcommon-x11-0 \
	libegl1 libgl1 libnss3 libxcomposite1 libxdamage1 libxrandr2 libxtst6 libxkbfile1 libasound2 \
	libfontconfig1 libdbus-1-3 fonts-wqy-microhei
# the real-window test (tests/test_real_window.py): a virtual X display, a window manager, real input, screenshots
TEST_TOOLS := xvfb openbox xdotool imagemagick

.PHONY: venv dataset qtdeps testdeps run test bench bundle deb image check-structure

## venv: the virtual environment, reinstalled only when a requirements file changes
venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt packaging/requirements-gui.txt packaging/requirements-core.txt
	@free=$$(df -Pk . | awk 'NR==2 {print int($$4 / 1048576)}'); \
	if [ "$$free" -lt $(VENV_GIB) ]; then \
		echo "only $$free GiB free here; the environment needs about $(VENV_GIB) GiB (torch with its CUDA libraries): free disk space, then run make again" >&2; \
		exit 2; \
	fi
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt
	@touch $@

## dataset: Debian's Fashion-MNIST package (the built-in dataset)
dataset:
	@if [ ! -f $(FASHION) ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update && apt-get install -y dataset-fashion-mnist; \
		else \
			echo "Fashion-MNIST is missing ($(FASHION)); install it with:" >&2; \
			echo "  sudo apt-get update && sudo apt-get install -y dataset-fashion-mnist" >&2; \
			exit 1; \
		fi; \
	fi

## qtdeps: the system libraries Qt (xcb platform, WebEngine) needs; a no-op when all are present
qtdeps:
	@if ! dpkg -s $(QT_LIBS) >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update && apt-get install -y $(QT_LIBS); \
		else \
			echo "Qt's system libraries are missing; install them with:" >&2; \
			echo "  sudo apt-get update && sudo apt-get install -y $(QT_LIBS)" >&2; \
			exit 1; \
		fi; \
	fi

## testdeps: what the real-window test drives the app with; a no-op when all are present
testdeps:
	@if ! dpkg -s $(TEST_TOOLS) >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update && apt-get install -y $(TEST_TOOLS); \
		else \
			echo "the real-window test's tools are missing; install them with:" >&2; \
			echo "  sudo apt-get update && sudo apt-get install -y $(TEST_TOOLS)" >&2; \
			exit 1; \
		fi; \
	fi

## run: the desktop application
run: venv dataset qtdeps
	$(PY) main.py

## test: the import contracts (.importlinter), no import cycle in gui/, cli/ or engine/, torch-pruning's
## private API only in engine/tp_compat.py (tools/check_tp_private.py), then the whole test suite, headless, on TEST_WORKERS pytest-xdist workers (0: one
## process; tests/conftest.py keeps the memory-heavy, Ray and real-window modules on one worker); it ends with the
## 20 slowest tests, the time per module and per worker, and the peak memory, per test and for the whole run
## (tests/resource_report.py). Two malloc arenas per process: with glibc's default of one per thread (up to 16 here)
## each kept its own freed memory, and a six-module run's process peaked 0.24 GiB higher. The project's modules are
## compiled once first: where PYTHONDONTWRITEBYTECODE is set (as on this project's machines) every process the
## tests start compiled them from source again (measured, medians of 5: 0.05 s of CPU for a command refusing bad
## input, 0.4 s for one importing the window's modules)
TEST_WORKERS ?= 2
test: venv dataset qtdeps testdeps
	$(VENV)/bin/lint-imports
	$(PY) benchmarks/structure.py --check-cycles gui,cli,engine
	$(PY) tools/check_tp_private.py
	$(PY) -m compileall -q -j 2 main.py engine gui cli
	MALLOC_ARENA_MAX=2 QT_QPA_PLATFORM=offscreen QTWEBENGINE_DISABLE_SANDBOX=1 $(PY) -m pytest -q -n $(TEST_WORKERS) \
		--dist loadgroup --durations=20 tests

## check-structure: no import cycle inside gui/, cli/ or engine/ (function-level and TYPE_CHECKING imports counted);
## benchmarks/structure.py without --check-cycles prints the whole picture
check-structure:
	$(PY) benchmarks/structure.py --check-cycles gui,cli,engine

## bench: every benchmark script, one after the other
bench: venv dataset
	@set -e; for script in benchmarks/*.py; do echo "== $$script"; $(PY) $$script; done

## bundle: dist/PruneLab (PyInstaller); only after the test suite and the bundle's own self-test pass
bundle: test
	bash packaging/build.sh --no-suite

## deb: prunelab_VERSION_amd64.deb from dist/PruneLab (run `make bundle` first; test it with packaging/test_deb.sh)
deb:
	bash packaging/make_deb.sh

## image: the headless image $(IMAGE) from packaging/Dockerfile (test it with packaging/test_image.sh): docker
## where its daemon runs, else buildah; a FROM image that cannot be pulled is first built locally
## (packaging/make_base.sh). WHEELS=DIR: a host folder of wheels pip may take from; IMAGE_CERT=FILE: the CA
## bundle pip needs behind a TLS-inspecting proxy (default: this shell's PIP_CERT); both buildah only.
## REV=COMMIT: build that commit (git archive) instead of the working tree.
IMAGE ?= prunelab
WHEELS ?=
IMAGE_CERT ?= $(PIP_CERT)
REV ?=
image:
	@set -e; \
	context=.; \
	if [ -n "$(REV)" ]; then \
		context=build/image-context; rm -rf $$context; mkdir -p $$context; \
		git archive "$(REV)" | tar -x -C $$context; echo "context: $(REV) = $$(git rev-parse --short "$(REV)")"; \
	fi; \
	if docker info >/dev/null 2>&1; then \
		[ -z "$(WHEELS)" ] || echo "note: WHEELS is for buildah; docker build takes its wheels from PyPI"; \
		time docker build -f $$context/packaging/Dockerfile -t $(IMAGE) $$context; \
		docker image ls $(IMAGE); exit 0; \
	fi; \
	command -v buildah >/dev/null || { echo "no Docker daemon and no buildah: apt-get install -y buildah debootstrap" >&2; exit 2; }; \
	base=$$(awk '$$1 == "FROM" {print $$2; exit}' $$context/packaging/Dockerfile); \
	if buildah inspect --type image "$$base" >/dev/null 2>&1; then :; \
	elif buildah pull "$$base" >/dev/null; then :; \
	else echo "$$base cannot be pulled: building a local one"; bash packaging/make_base.sh; fi; \
	echo "base: $$base $$(buildah inspect --type image --format '{{index .OCIv1.Config.Labels "org.opencontainers.image.description"}}' "$$base")"; \
	wheels=(); \
	if [ -n "$(WHEELS)" ]; then wheels=(-v "$(abspath $(WHEELS)):/tmp/wheels:ro" --build-arg PIP_FIND_LINKS=/tmp/wheels); fi; \
	if [ -n "$(IMAGE_CERT)" ]; then wheels+=(-v "$(abspath $(IMAGE_CERT)):/tmp/pip-ca.pem:ro" --build-arg PIP_CERT=/tmp/pip-ca.pem); fi; \
	time buildah bud --isolation chroot --pull=never --layers --force-rm --format docker "$${wheels[@]}" -f $$context/packaging/Dockerfile -t $(IMAGE) $$context; \
	buildah images $(IMAGE)
