"""First-deploy ordering: `pulumi up` never waits for something only a later step can make.

A fresh platform comes up in one `pulumi up`, and only then can its users push workload images
to the registry it created and train the models it serves (README, "Deploying for real").
So no object whose readiness pulumi-kubernetes awaits may run pods that need such an artifact:
that `up` would wait for it until it times out.

The await graph, as pulumi-kubernetes v4 builds it (provider/pkg/await/await.go and
provider/pkg/metadata/overrides.go): create and update wait for readiness of the built-in kinds
with await logic (a Deployment until its new ReplicaSet is Available, a Service until it has no
not-ready endpoints, a Job until it completes, ...), for any kind with a `pulumi.com/waitFor`
condition, and for nothing with `pulumi.com/skipAwait: "true"`. A Service's readiness is that of
the pods it selects. What a pod needs that the same `up` cannot have produced:

- an image in the platform registry (the `mlstack-platform` ConfigMap's `MLSTACK_REGISTRY`) when
  the stack creates that registry (ECR or Artifact Registry repositories in the stack): it is
  empty until images are pushed after the `up`. An on-prem registry exists before the stack and
  may hold the image already, so it does not count;
- a model (`MLSTACK_MODEL_URL`) where a training job of the stack exports it, or under the
  platform's models bucket (`MLSTACK_MODELS_URL`) when the stack creates that bucket: it exists
  only once training has run (or someone copied it in, after the `up`).

Values unknown during a preview (on a first deploy, the registry URL and every image built from
it) are not judged: an unknown image may as well come from an image build that the same `up`
runs before the Deployment. `mlstack check` plans with the backend's placeholders, so it knows
every value and judges them all.

`PULUMI_K8S_AWAIT_ALL=true` in the environment of `pulumi up` makes the provider wait for a Ready
condition on kinds without await logic too; no rule can see the environment, which is why the
workload components mark their objects with skipAwait rather than rely on the default.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pulumi_policy import PolicyResource, ReportViolation, StackValidationArgs

from mlstack.components.kubernetes.system import MODELS_ENV, REGISTRY_ENV
from mlstack.policies.rules.objects import (
    PodTemplate,
    annotations_of,
    describe,
    get,
    known,
    known_items,
    labels_of,
    mapping,
    pod_templates,
    stack_rule,
)
from mlstack.policies.rules.tenancy import Objects, image_repository
from mlstack.stacks.names import (
    PLATFORM_CONFIGMAP,
    SKIP_AWAIT_ANNOTATION,
    SYSTEM_NAMESPACE,
    WAIT_FOR_ANNOTATION,
)
from mlstack.workloads import contract

#: Resource types that create the platform's registry, and its buckets, in the stack.
REGISTRY_TYPES = frozenset(
    {"aws:ecr/repository:Repository", "gcp:artifactregistry/repository:Repository"}
)
BUCKET_TYPES = frozenset(
    {"aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2", "gcp:storage/bucket:Bucket"}
)

#: Built-in kinds whose create and update pulumi-kubernetes awaits and whose readiness depends
#: on pods: the entries with an `awaitCreation` in the provider's `awaiters` table
#: (provider/pkg/await/awaiters.go; a ReplicaSet has none), the Service's documented on its API
#: page ("There are no 'not ready' endpoints ... unless ... a Service without a selector").
AWAITED_POD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "Job", "Pod", "Service"})


def awaited(kind: str, props: Mapping[str, Any]) -> bool:
    """Whether `pulumi up` waits for the object to become ready after creating or updating it."""
    annotations = annotations_of(props)
    if annotations.get(SKIP_AWAIT_ANNOTATION) == "true":
        return False
    return kind in AWAITED_POD_KINDS or bool(annotations.get(WAIT_FOR_ANNOTATION))


@dataclass(frozen=True)
class LaterArtifacts:
    """Where what the platform's users make after the first `up` lands: the registry and the
    models bucket this stack creates (None where it does not), and the training exports."""

    registry: str | None
    models_url: str | None
    #: Model URL -> the training job (JobSet) that exports it.
    exports: Mapping[str, str]

    @classmethod
    def of(cls, resources: Iterable[PolicyResource], objects: Objects) -> LaterArtifacts:
        types = {r.resource_type for r in resources}
        platform = objects.named("ConfigMap", PLATFORM_CONFIGMAP, SYSTEM_NAMESPACE)
        data = known(platform.props, "data") if platform else None
        exports: dict[str, str] = {}
        for r in objects.by_kind.get("JobSet", ()):
            for t in pod_templates("JobSet", r.props):
                for value in _env_values(t, contract.MODEL_URL):
                    exports.setdefault(value, describe("JobSet", r.props))
        return cls(
            registry=_text(known(data, REGISTRY_ENV)) if types & REGISTRY_TYPES else None,
            models_url=_text(known(data, MODELS_ENV)) if types & BUCKET_TYPES else None,
            exports=exports,
        )

    def needed_by(self, t: PodTemplate) -> Iterator[str]:
        """Each artifact the pods of `t` need that the first `up` cannot have produced."""
        for c in t.containers():
            image = known(c, "image")
            if isinstance(image, str) and _under(image_repository(image), self.registry):
                yield f"container {c.get('name')!r}: image {image} from the platform registry"
        for value in _env_values(t, contract.MODEL_URL):
            if value in self.exports:
                yield f"model {value}, exported by training {self.exports[value]}"
            elif _under(value, self.models_url):
                yield f"model {value} in the platform's models bucket"


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _under(value: str, prefix: str | None) -> bool:
    return prefix is not None and value.startswith(f"{prefix.rstrip('/')}/")


def _env_values(t: PodTemplate, name: str) -> Iterator[str]:
    """The known values of the environment variable `name` in the template's containers."""
    for c in t.containers():
        for item in known_items(c.get("env")):
            if known(item, "name") == name:
                value = known(item, "value")
                if isinstance(value, str):
                    yield value


def _selects(selector: Mapping[str, Any], labels: Mapping[str, Any]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _pods_behind(service: PolicyResource, objects: Objects) -> Iterable[PodTemplate]:
    """The pod templates in the Service's namespace whose labels its selector matches."""
    selector = mapping(get(service.props, "spec", "selector"))
    if not selector or get(service.props, "spec", "type") == "ExternalName":
        return []
    namespace = get(service.props, "metadata", "namespace")
    found: list[PodTemplate] = []
    for kind, r, templates in objects.workloads():
        if get(r.props, "metadata", "namespace") != namespace:
            continue
        pod_labels = labels_of(get(r.props, "spec", "template") or {})
        if kind == "Pod":
            pod_labels = labels_of(r.props)
        if _selects(selector, pod_labels):
            found.extend(templates)
    return found


def awaits_no_later_artifacts(args: StackValidationArgs, report: ReportViolation) -> None:
    objects = Objects.of(args.resources)
    later = LaterArtifacts.of(args.resources, objects)
    for kind, items in objects.by_kind.items():
        for r in items:
            if not awaited(kind, r.props):
                continue
            templates = (
                _pods_behind(r, objects) if kind == "Service" else pod_templates(kind, r.props)
            )
            needs = [need for t in templates for need in later.needed_by(t)]
            if needs:
                report(
                    f"{describe(kind, r.props)}: `pulumi up` waits for it to become ready, but its "
                    f"pods need what only a later step makes ({'; '.join(dict.fromkeys(needs))}), "
                    f"so the first `up` would time out; annotate it {SKIP_AWAIT_ANNOTATION}: "
                    '"true" and watch it with kubectl',
                    r.urn,
                )


POLICIES = [
    stack_rule(
        "first-deploy-ordering",
        "Pulumi awaits no object whose pods need an image or model made after the first up.",
        awaits_no_later_artifacts,
    ),
]
