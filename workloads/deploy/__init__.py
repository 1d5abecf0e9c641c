"""How the workloads are deployed: pure manifest builders and the components that wrap them.

`settings` fills a training job's and an inference service's defaults from their pools; `pods`
holds what every workload pod shares (placement, store access, resources, restricted security);
`jobset` builds a training job's JobSet and `serving` an inference service's Deployments,
Service, autoscaler, disruption budget and NetworkPolicy as dicts (tested and schema-validated
without Pulumi); `training` and `inference` declare them.
"""
