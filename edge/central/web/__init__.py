"""The operator web console (``edge console``): review queue, fleet, watchlists, audit log."""

# Account roles, from least to most power; what each may do is in auth.PERMISSIONS.
ROLES = ("reviewer", "watchlist-admin", "auditor", "admin")
