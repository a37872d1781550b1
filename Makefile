# Two entry points, each doing all set-up first (see scripts/setup.sh).
PY := .venv/bin/python

.PHONY: setup app test
setup:
	@bash scripts/setup.sh

# The main job. Until the app lands: the paper's 1-D experiment for every divergence.
app: setup
	$(PY) -m training.toy --div all --rejection

test: setup
	HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False $(PY) -m pytest -q
