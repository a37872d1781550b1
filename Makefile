# Two entry points, each doing all set-up first (see scripts/setup.sh).
PY := .venv/bin/python

.PHONY: setup app test
setup:
	@bash scripts/setup.sh

# The main job: the web app on http://127.0.0.1:7860 (python -m app --help for options).
app: setup
	$(PY) -m app

test: setup
	HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False $(PY) -m pytest -q
