"""The Auto-Ops library: everything the pipeline computes, with no file layout or CLI in it.

The DVC stages (``stages/``), the loop (``autoops/``), the service (``serve/``) and the benchmarks
(``bench/``) all import from here and never from one another's entry points, so a computation has
one home and one test (tests/test_imports.py checks the rule).
"""
