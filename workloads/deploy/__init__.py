"""How the workloads are deployed: pure manifest builders and the components that wrap them.

`settings` fills a training job's defaults from its pool and model config, `jobset` builds its
JobSet as a dict (tested and schema-validated without Pulumi), and `training` declares it.
"""
