#!/usr/bin/env python3
"""Render a MetaWorld scripted-expert episode to a small H.264 demo video.

The video that ships with ``topreward_ros`` as its demo episode
(``topreward/topreward/data/demo_episode.mp4``) is made by this
script. It runs the MetaWorld scripted expert policy for one task, renders
each step offscreen, and writes:

* ``<out>.mp4``: H.264 (libx264, yuv420p), constant frame rate, with
  per-frame pts so that frame ``i`` has timestamp ``i / fps`` seconds.
* ``<out>.json``: a sidecar with the task, a natural-language instruction,
  fps, frame count, the first step where MetaWorld's success flag was true,
  camera, size, generator version and seed.

Frame 0 is the state after reset; frame ``i`` (i >= 1) is the state after
the i-th action, so ``success_step`` is also the index of the first frame in
which the task counts as done. The episode stops ``--extra-steps`` steps
after the first success (so the end state is visible), or after
``--max-steps`` steps.

Not a dependency of the package: run it from a throwaway virtual
environment, e.g.::

    python3 -m venv /tmp/mw/venv
    /tmp/mw/venv/bin/pip install metaworld packaging av numpy
    MUJOCO_GL=egl /tmp/mw/venv/bin/python scripts/make_demo_episode.py

MUJOCO_GL defaults to ``egl`` when unset or empty.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from fractions import Fraction
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "topreward" / "topreward" / "data" / "demo_episode.mp4"

# Natural-language instructions for some MetaWorld tasks; other tasks fall
# back to a sentence made from the task name.
INSTRUCTIONS: dict[str, str] = {
    "pick-place-v3": "pick up the puck and place it at the goal",
    "pick-place-wall-v3": "pick up the puck and place it at the goal behind the wall",
    "reach-v3": "move the gripper to the goal position",
    "push-v3": "push the puck to the goal",
    "door-open-v3": "open the door",
    "drawer-open-v3": "open the drawer",
    "drawer-close-v3": "close the drawer",
    "button-press-topdown-v3": "press the button from the top",
    "window-open-v3": "slide the window open",
    "window-close-v3": "slide the window closed",
    "peg-insert-side-v3": "insert the peg into the hole from the side",
    "basketball-v3": "pick up the ball and dunk it into the basket",
    "assembly-v3": "pick up the nut and place it onto the peg",
    "shelf-place-v3": "pick up the puck and place it on the shelf",
}


def instruction_for(task: str) -> str:
    """Return a natural-language instruction for a MetaWorld task name."""
    if task in INSTRUCTIONS:
        return INSTRUCTIONS[task]
    name = task.removesuffix("-v3").replace("-", " ")
    return f"perform the {name} task"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="pick-place-v3", help="MetaWorld v3 task name")
    p.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="output .mp4 path; the sidecar .json goes next to it "
        "(default: topreward/topreward/data/demo_episode.mp4 in the repo)",
    )
    p.add_argument("--size", type=int, default=256, help="frame width and height (even)")
    p.add_argument("--fps", type=int, default=10, help="video frame rate")
    p.add_argument("--seed", type=int, default=0, help="seed for the task's object/goal layout")
    p.add_argument(
        "--camera",
        default="corner",
        help="MetaWorld camera name (corner, corner2, corner3, corner4, topview, ...)",
    )
    p.add_argument("--crf", type=int, default=28, help="libx264 CRF (higher = smaller)")
    p.add_argument("--max-steps", type=int, default=150, help="cap on policy steps")
    p.add_argument(
        "--extra-steps", type=int, default=8, help="steps to keep rendering after first success"
    )
    p.add_argument(
        "--allow-failure",
        action="store_true",
        help="exit 0 even if the expert never reaches success",
    )
    args = p.parse_args(argv)
    if args.size <= 0 or args.size % 2:
        p.error("--size must be a positive even number (yuv420p)")
    if args.fps <= 0:
        p.error("--fps must be positive")
    return args


def needs_flip(camera: str) -> bool:
    """MetaWorld's fixed corner cameras render upside down (rotated 180 degrees)."""
    return camera.startswith("corner")


def run_episode(
    task: str, camera: str, size: int, seed: int, max_steps: int, extra_steps: int
) -> tuple[list[np.ndarray], int | None]:
    """Run the scripted expert and return (frames, success_step)."""
    if not os.environ.get("MUJOCO_GL"):
        os.environ["MUJOCO_GL"] = "egl"
    import metaworld  # noqa: PLC0415  (after MUJOCO_GL is set)
    from metaworld.policies import ENV_POLICY_MAP  # noqa: PLC0415

    if task not in ENV_POLICY_MAP:
        raise SystemExit(f"no scripted policy for task {task!r}")
    mt1 = metaworld.MT1(task, seed=seed)
    env = mt1.train_classes[task](
        render_mode="rgb_array", camera_name=camera, width=size, height=size
    )
    env.set_task(mt1.train_tasks[0])
    env.seed(seed)
    policy = ENV_POLICY_MAP[task]()
    flip = needs_flip(camera)

    def grab() -> np.ndarray:
        frame = np.asarray(env.render())
        if flip:
            frame = frame[::-1, ::-1]
        return np.ascontiguousarray(frame, dtype=np.uint8)

    try:
        obs, _ = env.reset()
        frames = [grab()]
        success_step: int | None = None
        for step in range(1, max_steps + 1):
            obs, _reward, terminated, truncated, info = env.step(policy.get_action(obs))
            frames.append(grab())
            if success_step is None and bool(info.get("success", 0.0)):
                success_step = step
            if success_step is not None and step >= success_step + extra_steps:
                break
            if terminated or truncated:
                break
    finally:
        env.close()
    return frames, success_step


def encode_mp4(frames: list[np.ndarray], path: Path, fps: int, crf: int) -> None:
    """Write RGB frames as H.264/yuv420p with pts = frame index in 1/fps units."""
    import av  # noqa: PLC0415

    time_base = Fraction(1, fps)
    height, width = frames[0].shape[:2]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.time_base = time_base
        stream.options = {"crf": str(crf), "preset": "slow"}
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    out: Path = args.out.with_suffix(".mp4")
    out.parent.mkdir(parents=True, exist_ok=True)

    frames, success_step = run_episode(
        args.task, args.camera, args.size, args.seed, args.max_steps, args.extra_steps
    )
    encode_mp4(frames, out, args.fps, args.crf)

    sidecar: dict[str, Any] = {
        "task": args.task,
        "instruction": instruction_for(args.task),
        "fps": args.fps,
        "num_frames": len(frames),
        "success_step": success_step,
        "camera": args.camera,
        "size": args.size,
        "generator": f"metaworld=={metadata.version('metaworld')}",
        "seed": args.seed,
    }
    json_path = out.with_suffix(".json")
    json_path.write_text(json.dumps(sidecar, indent=2) + "\n")

    print(
        f"wrote {out} ({out.stat().st_size} bytes, {len(frames)} frames, "
        f"success_step={success_step}) and {json_path}"
    )
    if success_step is None:
        print(f"warning: expert never succeeded within {args.max_steps} steps", file=sys.stderr)
        return 0 if args.allow_failure else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
