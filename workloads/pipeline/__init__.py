"""Pipelines: declared steps (prepare, train, evaluate, select, promote) run in order by one
engine, on this machine (`mlstack local pipeline`) or on the cluster (a CronJob runner)."""
