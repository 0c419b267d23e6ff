"""Offline data suites: the multi-task image suite, WordNet text tasks, SST-2 TSV files and batching.

Modules:
    images: eight (plus one optional) 32 x 32 RGB classification tasks generated from a seed.
    image_tasks: the NumPy generators behind the image tasks.
    text: WordNet gloss classification tasks and the SST-2 TSV loader.
    batching: shuffled minibatches reproducible from (seed, epoch).

Generated suites are cached under `$JAXLAB_DATA` by `jaxlab.core.cache`.
"""
