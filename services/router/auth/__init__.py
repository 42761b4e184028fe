"""The router's access-control layer: authenticate, authorize, then pass the identity on.

`controller.AccessController` is the one place a request's access is decided
(the concepts live in `shared.auth`); `token_endpoint` is the built-in Docker
token server; `listing` answers catalog and search pages filtered to what the
caller may pull; `audit` logs every write with its identity.
"""
