"""Where the deploy tests' stacks keep images and objects: the on-prem lab (MinIO, its
object-store Secret) and a GCP project."""

from __future__ import annotations

from mlstack.stacks.names import OBJECT_STORE_SECRET
from mlstack.workloads.deploy.pods import Placement

LAB_S3 = Placement(
    registry="harbor.lab.internal/ml",
    buckets={
        "datasets": "s3://lab-ml-datasets",
        "checkpoints": "s3://lab-ml-checkpoints",
        "models": "s3://lab-ml-models",
    },
    s3_endpoint="https://minio.lab.internal:9000",
    region="us-east-1",
    credentials_secret=OBJECT_STORE_SECRET,
)
GCS = Placement(
    registry="us-central1-docker.pkg.dev/acme-ml-dev/ml",
    buckets={"datasets": "gs://d", "checkpoints": "gs://c", "models": "gs://m"},
)
