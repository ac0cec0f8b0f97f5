# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_HOME := .mlops/demo-cli
DEMO_ROWS ?= 20000

.PHONY: demo demo-cli test test-tools image up down lint format bench clean

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

# The churn retrain DAG twice through Airflow on the embedded default (SQLite Airflow,
# local MLflow store, every step in the task container when Docker is there):
# month 1 promotes the first champion, month 2 is compared on the same holdout.
demo: $(BIN)/.installed
	@if docker info >/dev/null 2>&1; then include/docker/build_task_image.sh >/dev/null; fi
	@DEMO_ROWS=$(DEMO_ROWS) $(BIN)/python -m mlops_pack.airflow.demo

# The same retrain without Airflow, through the CLI, in-process.
demo-cli: $(BIN)/.installed
	rm -rf $(DEMO_HOME)
	$(BIN)/mlops-pack generate churn --rows $(DEMO_ROWS) --month 1 --output $(DEMO_HOME)/data/churn/churn_month_01.csv
	$(BIN)/mlops-pack generate churn --rows $(DEMO_ROWS) --month 2 --output $(DEMO_HOME)/data/churn/churn_month_02.csv
	@export MLOPS_PACK_HOME=$(DEMO_HOME) MLOPS_PACK_DATA_DIR=$(DEMO_HOME)/data; \
	$(BIN)/mlops-pack retrain --spec include/models/churn.yaml --out $(DEMO_HOME)/runs/1 || exit $$?; \
	$(BIN)/mlops-pack retrain --spec include/models/churn.yaml --data churn/churn_month_02.csv \
	  --out $(DEMO_HOME)/runs/2; code=$$?; [ $$code -eq 0 ] || [ $$code -eq 3 ] || exit $$code; \
	$(BIN)/mlops-pack history --spec include/models/churn.yaml

# The task image every step container runs; rebuilt only when its inputs change. Needs a
# Docker engine: an engine that already runs is used as is, one is started only in CI
# (CI=true) or with MLOPS_PACK_START_DOCKER=1.
image:
	include/docker/start_docker_engine.sh
	include/docker/build_task_image.sh

# Debian packages some tests drive (docker-compose, prometheus, chromium, postgresql);
# installed only in CI (CI=true) or when asked (MLOPS_PACK_INSTALL_TOOLS=1).
test-tools:
	.ci/test_tools.sh

test: $(BIN)/.installed image test-tools
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(BIN)/.installed
	$(BIN)/ruff format .

bench: $(BIN)/.installed
	$(BIN)/python bench/bench_evaluation.py
	$(BIN)/python bench/bench_retrain.py
	$(BIN)/python bench/bench_validation.py

clean:
	rm -rf .mlops .pytest_cache .ruff_cache

# Airflow (UI and REST API on 127.0.0.1:8080) with the pack loaded; prints the admin password.
up: $(BIN)/.installed
	$(BIN)/python -m mlops_pack.airflow.local_stack up

down:
	$(BIN)/python -m mlops_pack.airflow.local_stack down
