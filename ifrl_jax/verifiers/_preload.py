"""Preloaded by the multiprocessing forkserver (see pool.py): nltk and langdetect load once.

Workers forked from the server then start warm. An error here must not kill the forkserver, so
it is swallowed; a worker that cannot load the data reports it when it warms up itself.
"""

from ifrl_jax.verifiers import nlp

try:
    nlp.warmup()
except Exception:  # reported again, loudly, by the worker's own warmup
    pass
