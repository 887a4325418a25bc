"""Milestones: each participant's progress toward the DSI milestones and their amounts."""
