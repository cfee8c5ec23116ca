"""The PostgreSQL target schema: versioned migrations and their runner.

- :mod:`schema.runner`: ``upgrade`` and ``status`` (``strangler schema ...``, :mod:`schema.cli`)
- :mod:`schema.keys`: primary keys derived from legacy ids
- :mod:`schema.tenancy`: the roles and per-transaction tenant setting RLS keys on
- :mod:`schema.partitions`: monthly partitions of job_runs and user_activity

Conventions every table follows are in docs/schema.md.
"""
