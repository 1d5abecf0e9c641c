"""Cloud KMS keys for customer-managed encryption (`gcp.cmek: true`).

One key ring per cluster with two keys, each rotated every 90 days: one for the buckets (GCS
encrypts with it as the project's Cloud Storage service agent) and one for Kubernetes secrets
in etcd (as the GKE service agent). Each agent may use only its own key. Key rings and keys
cannot be deleted in GCP ("KeyRings cannot be deleted from Google Cloud Platform. Destroying a
provider-managed KeyRing will remove it from state but will not delete the resource from the
project", pulumi-gcp `kms.KeyRing`; the same for `kms.CryptoKey`, whose versions are destroyed):
the name stays taken and creating the ring again answers 409 already exists, so a stack created
again after a destroy names a new ring (`gcp.kms_key_ring`). The keys are protected in prod
because losing one loses the data under it.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from mlstack.components import Options

ROTATION_PERIOD = "7776000s"  # 90 days
ENCRYPTER_DECRYPTER = "roles/cloudkms.cryptoKeyEncrypterDecrypter"


def gke_service_agent(project_number: str) -> str:
    return f"serviceAccount:service-{project_number}@container-engine-robot.iam.gserviceaccount.com"


@dataclass(frozen=True)
class KeysArgs:
    #: The key ring's name: the cluster's, or `gcp.kms_key_ring` (GCP never deletes a ring
    #: or its keys, so a stack created again after a destroy needs a name not used before).
    key_ring: str
    project: str
    region: str
    #: Protect the keys and keep them when the stack is destroyed (prod).
    retain: bool


class Keys(pulumi.ComponentResource):
    """Key ring, the storage and secrets keys, and each service agent's use of its key."""

    def __init__(self, name: str, args: KeysArgs, opts: Options = None) -> None:
        super().__init__("mlstack:gcp:Keys", name, None, opts)
        stateful = pulumi.ResourceOptions(
            parent=self, protect=args.retain, retain_on_delete=args.retain
        )
        ring = gcp.kms.KeyRing(
            name,
            gcp.kms.KeyRingArgs(name=args.key_ring, project=args.project, location=args.region),
            opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True),
        )
        self.storage = self._key(f"{name}-storage", "storage", ring, stateful)
        self.secrets = self._key(f"{name}-secrets", "secrets", ring, stateful)
        # Lookups run as soon as the program does, not after what the component waits for,
        # unless they depend on it too: on a new project the APIs (Cloud Resource Manager for
        # the project, Storage for its agent) are enabled by resources this depends on.
        lookup = pulumi.InvokeOutputOptions(
            parent=self, depends_on=opts.depends_on if opts is not None else None
        )
        # The agents are per project; asking for the GCS one also creates it if it is new.
        gcs_agent = gcp.storage.get_project_service_account_output(
            project=args.project, opts=lookup
        )
        # A bucket names only the key's id, so without depending on this grant it can be
        # created before GCS may use the key: "403 Permission denied on Cloud KMS key"
        # (terraform-google-modules/terraform-google-kms#39; the provider's
        # google_storage_project_service_account example puts the grant in depends_on).
        self.storage_grant = gcp.kms.CryptoKeyIAMMember(
            f"{name}-storage-gcs",
            gcp.kms.CryptoKeyIAMMemberArgs(
                crypto_key_id=self.storage.id,
                role=ENCRYPTER_DECRYPTER,
                member=gcs_agent.email_address.apply(lambda e: f"serviceAccount:{e}"),
            ),
            opts=pulumi.ResourceOptions(parent=self.storage),
        )
        number = gcp.organizations.get_project_output(project_id=args.project, opts=lookup).number
        # The same race for the cluster's secrets encryption: the cluster depends on this.
        self.secrets_grant = gcp.kms.CryptoKeyIAMMember(
            f"{name}-secrets-gke",
            gcp.kms.CryptoKeyIAMMemberArgs(
                crypto_key_id=self.secrets.id,
                role=ENCRYPTER_DECRYPTER,
                member=number.apply(lambda n: gke_service_agent(str(n))),
            ),
            opts=pulumi.ResourceOptions(parent=self.secrets),
        )
        self.register_outputs({"storage": self.storage.id, "secrets": self.secrets.id})

    def _key(
        self, resource_name: str, purpose: str, ring: gcp.kms.KeyRing, opts: pulumi.ResourceOptions
    ) -> gcp.kms.CryptoKey:
        return gcp.kms.CryptoKey(
            resource_name,
            gcp.kms.CryptoKeyArgs(
                name=purpose,
                key_ring=ring.id,
                purpose="ENCRYPT_DECRYPT",
                rotation_period=ROTATION_PERIOD,
                destroy_scheduled_duration="2592000s",
            ),
            opts=opts,
        )
