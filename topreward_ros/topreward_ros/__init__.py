"""TOPReward for ROS 2: task progress from a video VLM's token probabilities.

`topreward` is ROS-free (prompt, frame schedule, scorer, metrics, video reading, CLI);
the modules beside it are the thin ROS 2 layer.
"""

__version__ = "0.1.0"
