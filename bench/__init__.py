"""Side-by-side benchmark of dockyard against the reference registry (CNCF distribution).

Run with ``python -m bench`` (see bench/README.md).
"""
