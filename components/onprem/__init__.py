"""On-prem backend: an existing Kubernetes cluster, S3-compatible storage and a registry."""
