"""Scoring stages: per-record measurements that decide whether an image is kept."""
