"""Offline evaluation and reward labels on recorded episodes.

`readers/` turns a source (manifest, LeRobot dataset, ROS 2 bag, video) into plain `Episode`s and knows
nothing of scoring; `evaluate.py` scores episodes and knows nothing of formats; `summary.py`, `plots.py`
and `labels.py` turn the scored curves into the files a lab uses.
"""
