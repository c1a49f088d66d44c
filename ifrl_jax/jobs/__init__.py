"""Jobs: one module per stage of the method, each `run(config) -> summary dict`.

Only jobs read configs (ml_collections); they build the library's small frozen dataclasses once
and call library functions with explicit arguments. Launchers (`launch/*.py`) parse flags and
call one job; `jobs.grpo` chains the stages of the default pipeline.
"""
