"""Segmentation methods: features and sampling, k-means, segmentation networks (architectures,
checkpoints, inference, training)."""
