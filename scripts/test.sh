#!/usr/bin/env bash
# Runs every check and test of keyward on a fresh Debian machine with Rust installed.
# Installs redis-server and redis-tools (redis-cli) only when they are missing; the tests start
# their own throw-away Redis instances on free ports, so nothing else is started or stopped.
set -euo pipefail

cd "$(dirname "$0")/.."

install_redis() {
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo="sudo"
        else
            echo "error: redis-server/redis-cli are missing and this user cannot install them" >&2
            echo "       (not root, no sudo): install the packages redis-server and redis-tools" >&2
            exit 1
        fi
    fi
    echo "==> installing redis-server and redis-tools (apt-get)"
    $sudo apt-get update
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server redis-tools
}

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    install_redis
fi
echo "==> using $(redis-server --version)"

echo "==> cargo fmt --check"
cargo fmt --check

echo "==> cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

echo "==> cargo test --all-targets --no-fail-fast"
cargo test --all-targets --no-fail-fast

# The standalone tests once more with the shared pipelined upstream connection
# ([upstream] share_connections = true) instead of the default one connection per client.
echo "==> standalone tests again with share_connections = true"
KEYWARD_TEST_SHARE_CONNECTIONS=true cargo test --no-fail-fast \
    --test standalone_forwarding --test guard_rules --test ordering --test hostile_input \
    --test lifecycle --test client_auth --test limits --test tls --test reload

echo "==> all checks and tests passed"
