# Sourced by run.sh and test.sh after setup: the venv, the ament index, and DDS kept on this machine.
ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
export VIRTUAL_ENV=$ROOT/.venv
export PATH=$VIRTUAL_ENV/bin:$PATH
# The ROS wheels do not set the ament index; without it ament_index_python finds no package.
export AMENT_PREFIX_PATH=$VIRTUAL_ENV
# Never let DDS discovery leave this machine.
export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}
export RMW_IMPLEMENTATION=rmw_fastrtps_cpp
export TOPREWARD_CACHE=${TOPREWARD_CACHE:-$ROOT/.stamps/cache}
