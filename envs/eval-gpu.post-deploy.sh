#!/usr/bin/env bash
# Run by Snakemake after it creates envs/eval-gpu.yaml: the project without its dependencies
# (its pyproject pins the CPU torch of the analysis environment; vLLM brings its own).
set -euo pipefail
pip install --no-deps -e "$(dirname "${BASH_SOURCE[0]}")/.."
