"""On-call schedules: pure rotation math (rotation.py) and the database overrides (overrides.py)."""
