"""Benchmarks of the SEG engine. Run ``python -m bench.seg_bench --help`` from the repository root."""
