#!/usr/bin/env bash
# A lab's colcon workspace, as CI checks it: this repository as `git clone` leaves it in ws/src/, built by plain
# `colcon build` against the venv alone as the underlay (where a lab has /opt/ros/<distro>: no topreward package
# in it), `source install/setup.bash`, then `colcon test` of the install-space checks: ros2 launch from the install
# space with frames coming back as Progress, the executables where `ros2 run` looks, the share files, the messages.
# (scripts/test.sh runs the whole suite through `colcon test` too, in the venv's own workspace.)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$ROOT/scripts/setup.sh"
VENV=${TOPREWARD_VENV:-$ROOT/.venv}
# What sourcing /opt/ros/<distro>/setup.bash gives a lab; DDS stays on this machine.
export VIRTUAL_ENV=$VENV PATH=$VENV/bin:$PATH AMENT_PREFIX_PATH=$VENV CMAKE_PREFIX_PATH=$VENV
export ROS_DISTRO=$(cat "$VENV/ros_distro") RMW_IMPLEMENTATION=rmw_fastrtps_cpp
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID=$(( 10 + $$ % 80 ))
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
export ROS_HOME=$TMP/ros ROS_LOG_DIR=$TMP/ros/log
WS=$TMP/ws
mkdir -p "$WS/src/topreward"
# Tracked and new files, nothing ignored (no venv, no build output): what a clone of this tree holds.
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done | tar --null -T - -cf -) \
    | tar -xf - -C "$WS/src/topreward"
cd "$WS"
echo "[workspace] colcon build in $WS (ROS 2 $ROS_DISTRO underlay: $VENV)"
colcon build --event-handlers console_cohesion+
set +u; source install/setup.bash; set -u
# The packages resolve into this workspace's install space, nowhere else.
python - "$WS/install" <<'PY'
import sys
from pathlib import Path
from ament_index_python.packages import get_package_prefix
import topreward, topreward_msgs.msg, topreward_ros
install = Path(sys.argv[1])
for where in (get_package_prefix("topreward_ros"), get_package_prefix("topreward_msgs"),
              get_package_prefix("topreward"), topreward.__file__, topreward_ros.__file__,
              topreward_msgs.msg.__file__):
    assert install in Path(where).parents, f"{where} is not in {install}"
print(f"[workspace] packages, modules and executables resolve into {install}")
PY
colcon test --packages-select topreward_ros --event-handlers console_direct+ --return-code-on-test-failure \
    --pytest-args -m ros -k "executables or topreward_command or share_files or message_fields or frames_come_back"
colcon test-result --all --verbose
