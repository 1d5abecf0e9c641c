"""Pulumi ComponentResources: one backend per cloud, and the Kubernetes add-ons."""
