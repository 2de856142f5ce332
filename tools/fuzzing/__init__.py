"""The mutation fuzzer behind tools/fuzz.py (issue #11): seeds, mutation operators, structural
generators, a pool of forked workers with time and memory limits, the target that runs dslc on a
case, delta-debugging minimization and the report.

Import it with tools/ on sys.path (tools/fuzz.py and tests/test_fuzz.py do)."""
