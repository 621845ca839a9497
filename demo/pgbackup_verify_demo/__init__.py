"""The built-in demo target and the self-tests' infrastructure: a seed-shaped host, real Kuma.

A separate distribution in the repository (`demo/`), never imported by the shipped package.
"""
