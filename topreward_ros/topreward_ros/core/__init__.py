"""ROS-free TOPReward core: nothing in this package imports rclpy."""
