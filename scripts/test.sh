#!/usr/bin/env bash
# The README's test command: set up (idempotent), then `colcon test` the core (topreward) and the node package
# (topreward_ros) in the venv's workspace, as a lab would in its own, with ROS kept off the network. Arguments go
# to pytest in each package (select with -k or -m ros; a package where nothing is selected passes);
# ROS_DISTRO=kilted tests the Kilted venv (TOPREWARD_VENV names another venv than .venv).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$ROOT/scripts/setup.sh"
source "$ROOT/scripts/env.sh"
# Whatever the calling shell says, DDS discovery stays on this machine.
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
ROS_HOME=$(mktemp -d)
export ROS_HOME ROS_LOG_DIR=$ROS_HOME/log
trap 'rm -rf "$ROS_HOME"' EXIT
# A domain id of its own for this run (tests add their own offsets); discovery stays on localhost.
export ROS_DOMAIN_ID=$(( 10 + $$ % 80 ))
WS=$VIRTUAL_ENV/workspace
# pytest writes through colcon into a pipe: unbuffered, its progress shows as it happens.
export PYTHONUNBUFFERED=1
cd "$ROOT"
colcon --log-base "$WS/log" test --base-paths topreward_msgs topreward topreward_ros \
    --packages-select topreward topreward_ros \
    --build-base "$WS/build" --install-base "$WS/install" --event-handlers console_direct+ \
    --return-code-on-test-failure --pytest-args "$@"
