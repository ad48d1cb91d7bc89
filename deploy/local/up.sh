#!/usr/bin/env bash
# From a fresh Debian machine with Rust to a running gateway: makes sure a RabbitMQ answers
# (installs and starts one when none does), creates the example's vhosts, declares the
# topology, builds the gateway and runs it on deploy/config/example.toml with the embedded
# municipality directory. Stop it with Ctrl-C (SIGINT): in-flight submissions finish first.
set -euo pipefail
cd "$(dirname "$0")/../.."

deploy/local/broker.sh
deploy/local/vhosts.sh
cargo build --release --locked
config=${OZG_CONFIG:-deploy/config/example.toml}
target/release/ozg-gateway declare-topology --config "$config"
echo "up.sh: starting ozg-gateway on $config (Ctrl-C stops it)"
exec target/release/ozg-gateway run --config "$config"
