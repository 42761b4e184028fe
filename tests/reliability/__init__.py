"""Fault tests (issue 7): killed processes, full disks, hostile clients, limits."""
