#!/usr/bin/env bash
# The README's test command: set up (idempotent), then run every test with ROS isolated from the network.
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
cd "$ROOT"
python -m pytest topreward_ros/test "$@"
