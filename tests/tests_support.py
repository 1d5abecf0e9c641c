"""Helpers shared by test modules in different folders (tests/ is on sys.path via conftest)."""

from __future__ import annotations

from typing import Any


def bad_extra_manifests() -> list[dict[str, Any]]:
    """Extra objects for the lab stack that break several rules at once: a privileged GPU Job
    with a :latest image from Docker Hub, no queue label and no GPU toleration, and a wildcard
    ClusterRole bound to a group as cluster-admin."""
    return [
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "rogue", "namespace": "vision"},
            "spec": {
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [
                            {
                                "name": "train",
                                "image": "docker.io/library/python:latest",
                                "securityContext": {"privileged": True},
                                "resources": {"limits": {"nvidia.com/gpu": 8}},
                            }
                        ],
                    }
                }
            },
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "everything"},
            "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "vision-admins"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "cluster-admin",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "lab-vision"}
            ],
        },
    ]
