# Two commands on a fresh machine (see README):  make demo   |   make test
# Every install goes through constraints.txt, which pins torch==2.13.0 (the CPU build)
# and the rest of the stack, so no package can pull in another torch.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
OUT ?= out/demo

.PHONY: install demo test test-slow bench-fetch bench-train clean

$(BIN)/.installed: pyproject.toml setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test,cluster]'
	touch $@

install: $(BIN)/.installed

# Curate the offline demo corpus, train the tiny autoencoder and UNet on its shards, then
# sample the model, export it with its model card, and check its samples for memorization.
# Curation and training resume, so running it again finishes an interrupted demo; the
# last three steps are redone into fresh folders.
MODEL = out/train-tiny
demo: install
	$(BIN)/cleanroom curate run pipelines/demo.yaml --out $(OUT)
	$(BIN)/cleanroom query $(OUT) "SELECT license, status, count(*) AS n FROM records GROUP BY 1, 2 ORDER BY 1, 2"
	$(BIN)/cleanroom train autoencoder pipelines/train-tiny.yaml --shards $(OUT)/shards --out $(MODEL) --resume
	$(BIN)/cleanroom train diffusion pipelines/train-tiny.yaml --shards $(OUT)/shards --out $(MODEL) --resume
	$(BIN)/cleanroom sample $(MODEL) --prompts pipelines/demo-prompts.txt --out $(MODEL)/samples --sampler dpmpp-2m --karras --steps 20 --cfg-scale 4 --images-per-prompt 2
	rm -rf $(MODEL)/export
	$(BIN)/cleanroom export $(MODEL) --out $(MODEL)/export
	$(BIN)/cleanroom memorization $(MODEL) --samples $(MODEL)/samples --out $(MODEL)/memorization

test: install /usr/bin/chromedriver
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

test-slow: install /usr/bin/chromedriver
	$(BIN)/python -m pytest -q -m slow

# The opt-in intake page is tested in Debian's headless Chromium (no browser downloads here).
SUDO = $(if $(filter 0,$(shell id -u)),,sudo)
/usr/bin/chromedriver:
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver

bench-fetch: install
	$(BIN)/python benchmarks/fetch.py

bench-train: install
	$(BIN)/python benchmarks/train.py

clean:
	rm -rf $(VENV) out
