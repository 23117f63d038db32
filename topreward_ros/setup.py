"""ament_python package setup for topreward_ros."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "topreward_ros"

setup(
    name=PACKAGE,
    version="0.2.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="topreward_ros maintainers",
    maintainer_email="maintainers@topreward-ros.dev",
    description="TOPReward as a ROS 2 node: Progress and SuccessDetected from camera topics (the core is topreward).",
    license="Apache-2.0",
    extras_require={"test": ["pytest"]},
    entry_points={
        "console_scripts": [
            "reward_node = topreward_ros.reward_node:main",
            "replay_video = topreward_ros.replay_video:main",
        ],
    },
)
