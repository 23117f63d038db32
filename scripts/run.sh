#!/usr/bin/env bash
# The README's run command: set up (idempotent), start the reward node, replay the bundled MetaWorld
# episode to it as a live camera (two episodes, reset in between) and print its progress as it arrives.
#   scripts/run.sh [MODEL]     MODEL: hub id or local Qwen3-VL directory (default Qwen/Qwen3-VL-8B-Instruct;
#                              falls back to the tiny random model, clearly labelled, when it cannot be had)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$ROOT/scripts/setup.sh"
source "$ROOT/scripts/env.sh"
# Whatever the calling shell says, DDS discovery stays on this machine.
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
SHARE=$(python -c 'from ament_index_python.packages import get_package_share_directory as g; print(g("topreward_ros"))')
DATA=$(python -c 'import topreward; print(topreward.DATA_DIR)')
# Large images between processes: shared memory + loopback UDP, nothing leaves the machine.
export FASTDDS_DEFAULT_PROFILES_FILE=$SHARE/config/fastdds_localhost_shm.xml
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$(( 100 + $$ % 100 ))}
export ROS_HOME=${ROS_HOME:-$ROOT/.stamps/ros}

MODEL=${1:-${TOPREWARD_MODEL:-Qwen/Qwen3-VL-8B-Instruct}}
if ! python -c "import sys; from topreward.model.resolve import model_available; sys.exit(not model_available(sys.argv[1]))" "$MODEL"; then
    echo "================================================================================"
    echo " $MODEL cannot be loaded here (no local copy, no hub access)."
    echo " Falling back to MODEL=tiny-random: a randomly initialised Qwen3-VL."
    echo " ITS NUMBERS ARE MEANINGLESS: this run only shows the pipeline working."
    echo " For real rewards: scripts/run.sh /path/to/Qwen3-VL-8B-Instruct (a GPU is advised)."
    echo "================================================================================"
    MODEL=tiny-random
fi
INSTRUCTION=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['instruction'])" "$DATA/demo_episode.json")
TOPIC=/demo/camera/image_raw

reward_node --ros-args --params-file "$SHARE/config/reward.yaml" -p model:="$MODEL" -p instruction:="$INSTRUCTION" \
    -p "camera_topics:=[$TOPIC]" -p qos_reliability:=reliable -p success_consecutive:=2 &
NODE_PID=$!
trap 'kill -INT $NODE_PID 2>/dev/null; wait $NODE_PID 2>/dev/null || true' EXIT
echo "reward node started (pid $NODE_PID, model $MODEL); replaying $DATA/demo_episode.mp4: \"$INSTRUCTION\""
replay_video "$DATA/demo_episode.mp4" --topic "$TOPIC" --loops 2 --reset-service /topreward/reset --node /topreward
