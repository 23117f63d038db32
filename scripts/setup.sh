#!/usr/bin/env bash
# One idempotent setup for the README's run and test commands and for CI:
#   venv with the pinned wheels of one ROS 2 distro (the underlay) -> wheel CMake paths repaired
#   -> topreward_msgs, topreward (the ROS-free core) and topreward_ros built by colcon -> `ros2 launch` where the
#      machine carries it.
# ROS_DISTRO picks the distro: jazzy (default, the LTS) or kilted. TOPREWARD_VENV picks the venv (default .venv).
# The venv records its distro; a venv of another distro is refused, never rebuilt behind the user's back.
# Each step leaves a stamp (inside the venv) holding the hash of its inputs and is skipped while it is unchanged.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DISTRO=${ROS_DISTRO:-jazzy}
VENV=${TOPREWARD_VENV:-$ROOT/.venv}
STAMPS=$VENV/.topreward-stamps
PYTHON=${PYTHON:-python3}
step() { printf '[setup] %s\n' "$*"; }
fail() { printf '[setup] %s\n' "$*" >&2; exit 2; }

[ -f "$ROOT/requirements/$DISTRO.txt" ] \
    || fail "ROS_DISTRO=$DISTRO is not supported by this setup: use jazzy (the default) or kilted"

# The distro a venv holds: its record, or for a venv made before records existed, its rclpy's major version.
venv_distro() {
    if [ -f "$VENV/ros_distro" ]; then cat "$VENV/ros_distro"; return; fi
    [ -x "$VENV/bin/python" ] || return 0
    "$VENV/bin/python" - <<'PY' 2>/dev/null || true
import importlib.metadata as m
print({"7": "jazzy", "9": "kilted"}.get(m.version("ros-rclpy").split(".")[0], "unknown"))
PY
}
held=$(venv_distro)
[ -z "$held" ] || [ "$held" = "$DISTRO" ] \
    || fail "$VENV holds ROS 2 $held, not ROS_DISTRO=$DISTRO: remove it (rm -rf $VENV) or set TOPREWARD_VENV to another path"

# Hash of the files under the given paths, without caches, build leftovers and tests (colcon installs no test).
hash_of() {
    (cd "$ROOT" && find "$@" -type f ! -path '*/__pycache__/*' ! -path '*.egg-info*' ! -path '*/.pytest_cache/*' \
        ! -path '*/.ruff_cache/*' ! -path '*/test/*' -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
}
fresh() { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }
# pip, minus the notes this image's pip configuration prints for every package; pip's status is kept.
pip_install() { "$VENV/bin/python" -m pip install --quiet "$@" 2>&1 | sed '/is ignored: it is neither a file nor a directory/d'; }

# 1. Virtual environment and pinned dependencies.
req_hash=$(hash_of requirements scripts/setup.sh)
if ! fresh venv "$req_hash" || [ ! -x "$VENV/bin/python" ]; then
    step "creating $VENV for ROS 2 $DISTRO and installing requirements/$DISTRO.txt (cold: about 2 minutes)"
    "$PYTHON" -m venv "$VENV"
    echo "$DISTRO" > "$VENV/ros_distro"
    mkdir -p "$STAMPS"
    pip_install --upgrade pip
    pip_install -r "$ROOT/requirements/$DISTRO.txt"
    # The wheels' exported CMake files name the build machine's Python and numpy include dirs.
    py_inc=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
    np_inc=$("$VENV/bin/python" -c 'import numpy; print(numpy.get_include())')
    for f in $(grep -rlE '/opt/python/cp3[0-9]+-cp3[0-9]+' "$VENV/share" --include='*.cmake' || true); do
        sed -i -E \
            -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#${py_inc}#g" \
            -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/(_core|core)/include#${np_inc}#g" \
            "$f"
    done
    rm -f "$STAMPS/workspace"
    echo "$req_hash" > "$STAMPS/venv"
fi

export VIRTUAL_ENV=$VENV
export AMENT_PREFIX_PATH=$VENV
export CMAKE_PREFIX_PATH=$VENV

# 2. The three packages, built by colcon as in a lab's workspace, with the venv as the underlay (where a lab has
#    /opt/ros/<distro>). The install space lives in the venv, so each venv has its own; env.sh sources it.
WS=$VENV/workspace
ws_hash=$(hash_of topreward_msgs topreward topreward_ros)
if ! fresh workspace "$ws_hash"; then
    step "building topreward_msgs, topreward and topreward_ros with colcon (install space: $WS/install)"
    mkdir -p "$WS"
    "$VENV/bin/colcon" --log-base "$WS/log" build \
        --base-paths "$ROOT/topreward_msgs" "$ROOT/topreward" "$ROOT/topreward_ros" \
        --build-base "$WS/build" --install-base "$WS/install" --cmake-args -DBUILD_TESTING=OFF \
        -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE="$VENV/bin/python" >"$WS/build.log" 2>&1 \
        || { tail -40 "$WS/build.log"; fail "colcon build failed; full log: $WS/build.log"; }
    echo "$ws_hash" > "$STAMPS/workspace"
fi

# 3. `ros2 launch` and the ros2 CLI, where this machine carries them as wheels built from the public sources
#    (a real ROS install brings its own). Idempotent: skipped in a second when already installed.
LAUNCH_WHEELS=${TOPREWARD_ROS2_LAUNCH:-$ROOT/../shared/ros2-launch}
if [ -f "$LAUNCH_WHEELS/install.sh" ]; then
    ROS_DISTRO=$DISTRO bash "$LAUNCH_WHEELS/install.sh" "$VENV" | sed 's/^/[setup] /'
fi
step "ready ($VENV, ROS 2 $DISTRO)"
