"""Placeholders for what GCP computes, so the offline plan can follow outputs through.

The plan has no GCP: a service account's email, a cluster's endpoint and CA, a key's or a
network's id do not exist. Where the program derives something from them (member strings,
the kubeconfig, bucket encryption, the subnet a cluster joins), the plan fills them in with
values of the right shape for the stack's project, and the project number 000000000000.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PROJECT_NUMBER = "000000000000"


def computed_outputs(
    project: str, region: str, resource_type: str, name: str, inputs: Mapping[str, Any]
) -> dict[str, Any]:
    """Outputs GCP would compute for one resource ('id' is the resource's id); {} for types
    nothing reads outputs of."""
    physical = str(inputs.get("name") or f"{name}-offline")
    project = str(inputs.get("project") or project)
    if resource_type == "gcp:serviceaccount/account:Account":
        email = f"{inputs['accountId']}@{project}.iam.gserviceaccount.com"
        sa_id = f"projects/{project}/serviceAccounts/{email}"
        return {"id": sa_id, "email": email, "name": sa_id, "member": f"serviceAccount:{email}"}
    if resource_type == "gcp:container/cluster:Cluster":
        master_auth = dict(inputs.get("masterAuth") or {})
        master_auth["clusterCaCertificate"] = "b2ZmbGluZS1wbGFjZWhvbGRlcg=="
        outputs: dict[str, Any] = {
            "id": f"projects/{project}/locations/{region}/clusters/{physical}",
            "endpoint": "OFFLINE.gke.internal",
            "masterAuth": master_auth,
        }
        endpoints = inputs.get("controlPlaneEndpointsConfig")
        if endpoints and "dnsEndpointConfig" in endpoints:
            # GKE names the DNS endpoint gke-<uid>-<project number>.<region>.gke.goog.
            dns = dict(endpoints["dnsEndpointConfig"])
            dns["endpoint"] = f"gke-offline-{PROJECT_NUMBER}.{region}.gke.goog"
            outputs["controlPlaneEndpointsConfig"] = {**endpoints, "dnsEndpointConfig": dns}
        return outputs
    if resource_type == "gcp:compute/network:Network":
        return {"id": f"projects/{project}/global/networks/{physical}"}
    if resource_type == "gcp:compute/subnetwork:Subnetwork":
        return {"id": f"projects/{project}/regions/{region}/subnetworks/{physical}"}
    if resource_type == "gcp:kms/keyRing:KeyRing":
        return {"id": f"projects/{project}/locations/{region}/keyRings/{physical}"}
    if resource_type == "gcp:kms/cryptoKey:CryptoKey":
        return {"id": f"{inputs.get('keyRing')}/cryptoKeys/{physical}"}
    if resource_type == "gcp:artifactregistry/repository:Repository":
        repository = inputs.get("repositoryId")
        location = inputs.get("location") or region
        return {"id": f"projects/{project}/locations/{location}/repositories/{repository}"}
    if resource_type == "gcp:projects/iAMCustomRole:IAMCustomRole":
        return {"name": f"projects/{project}/roles/{inputs.get('roleId')}"}
    return {}


def call_outputs(project: str, token: str) -> dict[str, Any]:
    """Results of the invokes the backend makes."""
    if token == "gcp:storage/getProjectServiceAccount:getProjectServiceAccount":
        email = f"service-{PROJECT_NUMBER}@gs-project-accounts.iam.gserviceaccount.com"
        return {"emailAddress": email, "member": f"serviceAccount:{email}", "project": project}
    if token == "gcp:organizations/getProject:getProject":
        return {"number": PROJECT_NUMBER, "projectId": project, "name": project}
    return {}
