# Sourced by run.sh and test.sh after setup: the venv (the underlay), the colcon install space on top of it,
# and DDS kept on this machine.
ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
export VIRTUAL_ENV=${TOPREWARD_VENV:-$ROOT/.venv}
export PATH=$VIRTUAL_ENV/bin:$PATH
# The distro the venv was built for (scripts/setup.sh records it).
export ROS_DISTRO=$(cat "$VIRTUAL_ENV/ros_distro")
# The ROS wheels do not set the ament index; without it ament_index_python finds no package.
export AMENT_PREFIX_PATH=$VIRTUAL_ENV
# The packages as colcon installed them, exactly as a lab's workspace would be sourced (colcon's scripts read
# unset variables, so `set -u` is lifted around them and restored).
case $- in *u*) set +u; source "$VIRTUAL_ENV/workspace/install/setup.bash"; set -u ;;
           *) source "$VIRTUAL_ENV/workspace/install/setup.bash" ;; esac
# The node's executables (reward_node, replay_video) by name, where `ros2 run` also finds them; `topreward`
# is on PATH from the install space's bin/ (an ament_python package without a script dir).
export PATH=$VIRTUAL_ENV/workspace/install/topreward_ros/lib/topreward_ros:$PATH
# Never let DDS discovery leave this machine.
export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}
export RMW_IMPLEMENTATION=rmw_fastrtps_cpp
export TOPREWARD_CACHE=${TOPREWARD_CACHE:-$ROOT/.stamps/cache}
