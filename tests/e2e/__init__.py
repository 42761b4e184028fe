"""End-to-end tests: real registry clients against a running registry."""
