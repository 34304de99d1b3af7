"""Support code for the tests and the benchmarks, run from a checkout (not installed with the
product, which never imports it):

- reference.py, reference2.py: upstream's FireRedASR (v1, FireRedASR2) behind our model
  interface, the parity references;
- random_model.py: random-weight model directories in the official format.
"""
