"""Access control's concepts, one module each; the router's `services.router.auth` uses them.

The design's rules:

- Who: an `identity.Identity`, from an htpasswd password (`htpasswd`), a
  token (`tokens`, ours or an external issuer's) or nobody (anonymous).
- What: `access.required` derives the (repository, actions) a request needs
  from its method and route alone, as distribution's appendAccessRecords does:
  GET/HEAD pull, POST/PUT/PATCH pull+push, DELETE delete, a mount's source pull.
- Whether: `policy.Policy` maps repository globs to users, groups, logged-in
  users and anonymous callers; what no rule grants is denied. A token grants
  at most its `access` claims, and ours also no more than the policy grants now.
- The services trust the router's word: the identity travels to storage and the
  index in `identity.IDENTITY_HEADER`, which no client can set (the router
  strips every client `X-Dockyard-*` header).
- Secrets: passwords are checked with bcrypt and remembered only as keyed
  hashes (`credentials`); secrets are compared in constant time; failed logins
  are limited per user and per address (`ratelimit`); no Authorization header,
  password or token is ever logged.
"""
