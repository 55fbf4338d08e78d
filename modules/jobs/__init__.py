"""The work queue: jobs submitted by the page or the API run one at a time on a worker,
with per-job progress, ETA, interrupt and skip."""
