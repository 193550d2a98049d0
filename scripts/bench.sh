#!/bin/bash
# Run every benchmark in bench/ against an optimised build; prints `name: value` lines.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
"$BUILD/bin/bench_val" "${POSBUS_BENCH_MAP_KEYS:-1000000}"
"$BUILD/bin/bench_bus" "${POSBUS_BENCH_EVENTS:-300000}" "${POSBUS_BENCH_ROUND_TRIPS:-20000}"
/usr/bin/python3 bench/bench_sales.py "$BUILD" "${POSBUS_BENCH_SALES:-30000}" "${POSBUS_BENCH_SIMS:-6}"
"$BUILD/bin/bench_node" "$BUILD" "${POSBUS_BENCH_NODE_ITEMS:-100000}" "${POSBUS_BENCH_NODE_SCANS:-20000}"
/usr/bin/python3 bench/bench_node.py "$BUILD" "${POSBUS_BENCH_NODE_ITEMS:-100000}" \
    "${POSBUS_BENCH_NODE_SALES:-1000}" "${POSBUS_BENCH_NODE_BACKLOG:-10000}"
/usr/bin/python3 bench/bench_cards.py "$BUILD" "${POSBUS_BENCH_CARD_SECONDS:-5}" \
    "${POSBUS_BENCH_CARD_PROCS:-4}"
/usr/bin/python3 bench/bench_payments.py "$BUILD" "${POSBUS_BENCH_PAY_INTENTS:-300}" \
    "${POSBUS_BENCH_PAY_SECONDS:-5}" "${POSBUS_BENCH_PAY_PROCS:-4}"
