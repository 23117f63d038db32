"""What the model looks at: camera images and video decoded to RGB, views tiled, frames sampled on a time grid."""
