#!/usr/bin/env bash
# The core without ROS, as a learner installs it: a fresh venv with only `pip install ./topreward` (plus the `tiny`
# extra for the random smoke-test model), then, in a clean environment (no ROS venv, no workspace sourced):
# rclpy cannot be imported, `topreward score` scores the bundled demo episode, and the TOPReward facade serves
# an episode. --install-only prepares the venv and stops (CI does that beside the other jobs).
# TOPREWARD_CORE_VENV picks the venv (default .venv-core). Needs python3 >= 3.10 and the package registry.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${TOPREWARD_CORE_VENV:-$ROOT/.venv-core}
PYTHON=${PYTHON:-python3}
say() { echo "[core-pip] $*"; }

if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV (cold: a few minutes, torch is large)"
    "$PYTHON" -m venv "$VENV"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# pip builds in the source folder (build/, *.egg-info): a copy keeps this tree and a colcon build beside it clean.
cp -r "$ROOT/topreward" "$work/topreward"
# The dependencies once, then this tree's package itself every time (same version number: pip would keep the old).
"$VENV/bin/pip" install --quiet --disable-pip-version-check "$work/topreward[tiny]"
"$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps --force-reinstall "$work/topreward"
[ "${1:-}" = "--install-only" ] && { say "installed in $VENV"; exit 0; }

# Nothing of the ROS venv or a sourced workspace leaks in: only this venv's bin on PATH.
clean=(env -i HOME="$HOME" PATH="$VENV/bin:/usr/bin:/bin" HF_HUB_OFFLINE=1 TOPREWARD_CACHE="$work/cache")

if "${clean[@]}" python -c "import rclpy" 2>/dev/null; then
    say "FAILED: rclpy is importable in the core's venv"; exit 1
fi
say "rclpy is not installed here: ok"

demo=$("${clean[@]}" python -c "import topreward; print(topreward.DEMO_EPISODE)")
task=$("${clean[@]}" python -c "import json, topreward; print(json.load(open(topreward.DATA_DIR / 'demo_episode.json'))['instruction'])")
"${clean[@]}" topreward score "$demo" -i "$task" --model tiny-random --frame-size 64 --prefixes 4 \
    --out "$work/curve.json" --quiet
"${clean[@]}" python - "$work/curve.json" <<'PY'
import json, sys
curve = json.load(open(sys.argv[1]))
assert len(curve["log_prob_true"]) == 4 and curve["prefix_lengths"][-1] == len(curve["frame_times"]), curve
print(f"[core-pip] topreward score: {len(curve['prefix_lengths'])} prefixes of the demo episode: ok")
PY

"${clean[@]}" python - <<'PY'
import json, math
import topreward
from topreward import TOPReward
from topreward.frames.video import read_frames

task = json.load(open(topreward.DATA_DIR / "demo_episode.json"))["instruction"]
reward = TOPReward.load("tiny-random", device="cpu", dtype="float32", frame_size=(64, 64))
reward.reset(task)
steps = [s for frame, t in read_frames(topreward.DEMO_EPISODE) if (s := reward.observe(frame, t)) is not None]
assert steps and all(math.isfinite(s.log_prob_true) and 0.0 <= s.progress <= 1.0 for s in steps), steps
assert [s.num_frames for s in steps] == list(range(1, len(steps) + 1))
print(f"[core-pip] TOPReward facade: {len(steps)} steps of the demo episode: ok")
PY
say "passed"
