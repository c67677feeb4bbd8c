"""Accuracy against reference maps: references and regions on the label grid, counting, metrics, reports, change."""
