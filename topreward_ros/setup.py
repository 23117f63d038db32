"""ament_python package setup for topreward_ros."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "topreward_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    package_data={PACKAGE: ["data/*.mp4", "data/*.json", "data/*.xml"]},
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
    description="TOPReward: task progress from Qwen3-VL token probabilities, as a ROS 2 node.",
    license="Apache-2.0",
    extras_require={"test": ["pytest"]},
    entry_points={
        "console_scripts": [
            "topreward = topreward_ros.core.cli:main",
            "reward_node = topreward_ros.reward_node:main",
            "replay_video = topreward_ros.replay_video:main",
        ],
    },
)
