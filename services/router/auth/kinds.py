"""The route kinds the router hands to access control (see `services.router.app`).

Apart from `services.router.auth.controller` so that the router can name them
without importing the controller, whose token and password code (PyJWT,
cryptography, bcrypt) a router without access control never loads.
"""

from __future__ import annotations

BASE, CATALOG, SEARCH, UPLOADS, UPLOAD = "base", "catalog", "search", "uploads", "upload"
# Registry-wide administration (GET /api/v1/usage): see the controller's `_administrator`.
USAGE = "usage"
# The web UI's repository summaries list repositories as the catalog does.
SUMMARIES = "summaries"
LISTINGS = (CATALOG, SEARCH, SUMMARIES)
