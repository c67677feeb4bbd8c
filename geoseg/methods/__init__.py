"""Segmentation methods: features and sampling, k-means, DeepLabV3+ (checkpoints, inference, training)."""
