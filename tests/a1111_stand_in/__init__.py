"""Stand-in for AUTOMATIC1111 1.10.1's ``modules`` package (see README.md) and a harness to use it."""
