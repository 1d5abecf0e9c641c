"""GCP backend: VPC, GKE Standard, node pools, GCS, Artifact Registry, Workload Identity."""
