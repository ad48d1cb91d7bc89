#!/usr/bin/env bash
# A longer soak with random faults (connections closed, a destination exchange deleted and
# recreated, SIGKILL and SIGTERM with restarts) against the local broker; prints the tally
# published / delivered / dead-lettered / lost / duplicated. Usage: soak.sh [SECONDS] (600).
# OZG_SOAK_SEED=N repeats a run's faults.
set -euo pipefail
cd "$(dirname "$0")/../.."
deploy/local/broker.sh
deploy/local/postgres.sh
OZG_SOAK_SECONDS=${1:-600} cargo test --release --locked --test soak -- --nocapture
