#!/usr/bin/env bash
# One idempotent setup for the README's run and test commands and for CI:
#   .venv with pinned wheels -> wheel CMake paths repaired -> topreward_msgs built -> topreward_ros installed.
# Each step leaves a stamp holding the hash of its inputs and is skipped while the hash is unchanged.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$ROOT/.venv
STAMPS=$ROOT/.stamps
PYTHON=${PYTHON:-python3}
mkdir -p "$STAMPS"

# Hash of the files under the given paths, without caches and build leftovers.
hash_of() {
    (cd "$ROOT" && find "$@" -type f ! -path '*/__pycache__/*' ! -path '*.egg-info*' ! -path '*/.pytest_cache/*' \
        ! -path '*/.ruff_cache/*' -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
}
fresh() { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }
step() { printf '[setup] %s\n' "$*"; }
# pip, minus the notes this image's pip configuration prints for every package; pip's status is kept.
pip_install() { "$VENV/bin/python" -m pip install --quiet "$@" 2>&1 | sed '/is ignored: it is neither a file nor a directory/d'; }

# 1. Virtual environment and pinned dependencies.
req_hash=$(hash_of requirements.txt scripts/setup.sh)
if ! fresh venv "$req_hash" || [ ! -x "$VENV/bin/python" ]; then
    step "creating $VENV and installing requirements.txt (cold: about 2 minutes)"
    "$PYTHON" -m venv "$VENV"
    pip_install --upgrade pip
    pip_install -r "$ROOT/requirements.txt"
    # The wheels' exported CMake files name the build machine's Python and numpy include dirs.
    py_inc=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
    np_inc=$("$VENV/bin/python" -c 'import numpy; print(numpy.get_include())')
    for f in $(grep -rlE '/opt/python/cp3[0-9]+-cp3[0-9]+' "$VENV/share" --include='*.cmake' || true); do
        sed -i -E \
            -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#${py_inc}#g" \
            -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/(_core|core)/include#${np_inc}#g" \
            "$f"
    done
    rm -f "$STAMPS"/msgs "$STAMPS"/pkg
    echo "$req_hash" > "$STAMPS/venv"
fi

export VIRTUAL_ENV=$VENV
export AMENT_PREFIX_PATH=$VENV
export CMAKE_PREFIX_PATH=$VENV

# 2. The interface package, generated with the wheels' rosidl toolchain and installed into the venv.
msgs_hash=$(hash_of topreward_msgs)
if ! fresh msgs "$msgs_hash"; then
    step "building topreward_msgs"
    rm -rf "$ROOT/build/topreward_msgs"; mkdir -p "$ROOT/build"
    cmake -S "$ROOT/topreward_msgs" -B "$ROOT/build/topreward_msgs" -DCMAKE_PREFIX_PATH="$VENV" \
        -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release >"$ROOT/build/msgs.log" 2>&1 \
        && cmake --build "$ROOT/build/topreward_msgs" -j"$(nproc)" >>"$ROOT/build/msgs.log" 2>&1 \
        && cmake --install "$ROOT/build/topreward_msgs" --prefix "$VENV" >>"$ROOT/build/msgs.log" 2>&1 \
        || { tail -40 "$ROOT/build/msgs.log"; echo "[setup] topreward_msgs failed to build; full log: build/msgs.log" >&2; exit 1; }
    echo "$msgs_hash" > "$STAMPS/msgs"
fi

# 3. The node package (share files, console scripts) installed into the venv.
pkg_hash=$(hash_of topreward_ros)
if ! fresh pkg "$pkg_hash"; then
    step "installing topreward_ros"
    pip_install --no-deps --no-build-isolation "$ROOT/topreward_ros"
    rm -rf "$ROOT/topreward_ros/build"
    # `ros2 run` and `ros2 launch` look for executables in <prefix>/lib/<package>/, where colcon puts them
    # (setup.cfg install_scripts); pip ignores that and leaves them in bin/ only.
    mkdir -p "$VENV/lib/topreward_ros"
    for exe in reward_node replay_video topreward; do ln -sf "../../bin/$exe" "$VENV/lib/topreward_ros/$exe"; done
    echo "$pkg_hash" > "$STAMPS/pkg"
fi

# 4. `ros2 launch` and the ros2 CLI, where this machine carries them as wheels built from the public sources
#    (a real ROS install brings its own). Idempotent: skipped in a second when already installed.
LAUNCH_WHEELS=${TOPREWARD_ROS2_LAUNCH:-$ROOT/../shared/ros2-launch}
if [ -f "$LAUNCH_WHEELS/install.sh" ]; then
    bash "$LAUNCH_WHEELS/install.sh" "$VENV" | sed 's/^/[setup] /'
fi
step "ready ($VENV)"
