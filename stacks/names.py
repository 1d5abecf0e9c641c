"""Names that are API: what mlstack writes on Kubernetes objects and what others look up by name.

Pods select pools by these labels, Kueue reads its queue and priority labels, the policy pack
and users' `kubectl -l` selectors match them, and the objects named here are found by name (the
ServiceAccount a cloud identity is bound to, the Secrets pods mount). Renaming one strands what
is already deployed under the old name: change this file only with a migration. Names one cloud
alone uses (GKE's Workload Identity annotation, AWS's subnet tags, the internal load-balancer
annotations) stay with that cloud.
"""

from __future__ import annotations

# Node labels: every node of a pool carries them (NodePool.node_labels).

#: Reserved for mlstack's own labels: the schema rejects config pool labels under it.
MLSTACK_LABEL_PREFIX = "mlstack.dev/"
#: The pool's name: workloads' nodeSelector, Kueue flavors, the autoscaler, the pool rules.
POOL_LABEL = "mlstack.dev/pool"
#: cpu or gpu: the device plugin runs on gpu nodes; the pool rules read it.
POOL_KIND_LABEL = "mlstack.dev/pool-kind"
#: on-demand, spot or reserved: Kueue flavors carry it; the spot rules read it.
CAPACITY_LABEL = "mlstack.dev/capacity"
#: The catalog's accelerator name on GPU pools, for users' selectors.
ACCELERATOR_LABEL = "mlstack.dev/accelerator"
#: The pool named so on AWS and GCP runs the add-ons; the cluster autoscaler selects it.
SYSTEM_POOL = "system"
#: On an on-prem node patch: the taints the node's pool declares (`key=value:Effect`, comma
#: separated), which the operator sets at node registration; the pool rules read them.
POOL_TAINTS_ANNOTATION = "mlstack.dev/pool-taints"
#: GPU pools' default taint key: GPU pods and the device plugin tolerate it.
GPU_TAINT_KEY = "nvidia.com/gpu"
#: The device plugin's resource: pods request it, ResourceQuotas and ClusterQueues count it.
GPU_RESOURCE = "nvidia.com/gpu"

# Labels and annotations on team objects and workloads.

#: On every object mlstack declares in the cluster (and AWS's default tags).
MANAGED_BY = {"app.kubernetes.io/managed-by": "mlstack"}
#: The owning team: tenancy objects, queues and workloads; the stack rules group by it.
TEAM_LABEL = "mlstack.dev/team"
#: A training JobSet and its pods, by job name, for users' selectors.
JOB_LABEL = "mlstack.dev/training-job"
#: An inference service's objects and pods: its Service and PodDisruptionBudget select on it.
SERVICE_LABEL = "mlstack.dev/inference-service"
#: stable or canary: which Deployment a serving pod belongs to; each Deployment selects on it.
TRACK_LABEL = "mlstack.dev/track"
#: Batch work that resumes from checkpoints; the spot rule lets only such work on spot pools.
CHECKPOINTS_ANNOTATION = "mlstack.dev/checkpoints"
#: A pool's GPUs on its Kueue flavor: the quota rules compare quotas with it.
MAX_GPUS_ANNOTATION = "mlstack.dev/max-gpus"
#: On a ClusterQueue whose cohort may promise more GPUs than its pools have; the quota rules.
ALLOW_OVERCOMMIT_ANNOTATION = "mlstack.dev/allow-overcommit"
#: On serving pods, for Prometheus' pod discovery: scrape, on this port, at this path.
PROMETHEUS_SCRAPE_ANNOTATION = "prometheus.io/scrape"
PROMETHEUS_PORT_ANNOTATION = "prometheus.io/port"
PROMETHEUS_PATH_ANNOTATION = "prometheus.io/path"
#: pulumi-kubernetes' own annotations (provider/pkg/metadata/overrides.go): "true" skips the
#: provider's readiness wait on create and update; waitFor makes it wait on a condition of any kind.
#: The first-deploy ordering rule reads both.
SKIP_AWAIT_ANNOTATION = "pulumi.com/skipAwait"
WAIT_FOR_ANNOTATION = "pulumi.com/waitFor"

# Kueue: the labels its admission reads and the objects the tenancy layer names for it.

#: A workload's LocalQueue; the pod rules require it on batch work.
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
#: A workload's WorkloadPriorityClass.
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
#: Each team's LocalQueue: Kueue queues a Job without a queue label in the one called so.
LOCAL_QUEUE_NAME = "default"
#: The node-less flavor holding CPU and memory quota; the config checks keep pools off it.
DEFAULT_FLAVOR = "default"
#: The PriorityClasses and WorkloadPriorityClasses, highest first; workloads name one.
SERVING_PRIORITY = "mlstack-serving"
TRAINING_PRIORITY = "mlstack-training"
BEST_EFFORT_PRIORITY = "mlstack-best-effort"

# Pod Security Admission's namespace labels: `<prefix><mode>` and `<prefix><mode>-version`.

#: Team namespaces set every mode (enforce, audit, warn) and its version.
POD_SECURITY_LABEL_PREFIX = "pod-security.kubernetes.io/"
#: The level a namespace enforces; the access rules require it.
POD_SECURITY_ENFORCE_LABEL = "pod-security.kubernetes.io/enforce"
#: The level a namespace warns about (mlstack-system's).
POD_SECURITY_WARN_LABEL = "pod-security.kubernetes.io/warn"

#: Kubernetes' own label on every namespace: NetworkPolicies and ClusterQueues select by it.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"

# Objects others find by name.

#: The platform's namespace: its ConfigMap and credentials; no team may take the name.
SYSTEM_NAMESPACE = "mlstack-system"
#: Kueue's release; no team may take the name.
KUEUE_NAMESPACE = "kueue-system"
#: The JobSet controller's release; no team may take the name.
JOBSET_NAMESPACE = "jobset-system"
#: The environment contract in SYSTEM_NAMESPACE; the registry rule reads it.
PLATFORM_CONFIGMAP = "mlstack-platform"
#: Static object-store keys (stores without workload identity); workload pods read them.
OBJECT_STORE_SECRET = "object-store-credentials"
#: Image pull credentials in each team namespace (registries without node identity).
REGISTRY_PULL_SECRET = "registry-pull"
#: Each team's workload ServiceAccount: every workload pod runs as it, cloud IAM binds to it.
SERVICE_ACCOUNT_NAME = "workload"
#: Each team's pipeline runner ServiceAccount (teams with pipelines): it may create, watch and
#: delete the team's Jobs and JobSets, and has the team's storage identity like `workload`.
PIPELINE_RUNNER_SA = "pipeline-runner"
#: A pipeline's label on its runner and on every object a run creates.
PIPELINE_LABEL = "mlstack.dev/pipeline"

# Image repositories: `<registry>/<repository>:<tag>` in every workload's pod spec.

#: The registry repository training images are pushed to (`<registry>/train:<tag>`).
TRAIN_REPOSITORY = "train"
#: The registry repository serving images are pushed to (`<registry>/serve:<tag>`).
SERVE_REPOSITORY = "serve"
