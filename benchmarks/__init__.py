"""make bench: the benchmarks, run as scripts (``python benchmarks/run.py``); a package only
so that the tests can import the harness as ``benchmarks.harness``."""
