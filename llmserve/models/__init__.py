"""The models being served: the registry (resolve, versions, promote, run-time entries), one worker per
model version, the jobs that cross to its thread, residency and lifecycle events.
"""
