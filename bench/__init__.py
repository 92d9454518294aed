"""The public benchmark (`python -m bench`) and its per-stage benches.

Importing `modeling` first sets `OMP_WAIT_POLICY=PASSIVE` before any bench loads torch (see
`modeling/__init__.py`): on a machine shared with other jobs, spinning OpenMP threads made the
timings 1.5-3x slower and noisier."""

import modeling  # noqa: F401
