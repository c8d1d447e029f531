"""``cdcfast bench pipeline`` and ``cdcfast bench e2e``: the real ``cdcfast supervise`` pipeline fed
by idx files advancing as on a node, next to the single-process path in the same run.

* :mod:`~cdcfast.benchmarks.replay`: generated segments released into a fresh ``cdc_raw`` one
  sync at a time (``_cdc.idx`` offsets at sync-marker boundaries, ``COMPLETED`` at the end);
* :mod:`~cdcfast.benchmarks.procstat`: CPU seconds of the pipeline's processes from ``/proc``;
* :mod:`~cdcfast.benchmarks.pipeline`: the run, latency from each idx advance to the checkpoint
  that covers it landing in each sink, and the results file.
"""
