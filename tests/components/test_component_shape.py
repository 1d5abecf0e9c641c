"""Every ComponentResource of mlstack has one shape: `(name, args, opts)`, its args a frozen
dataclass `<Class>Args` beside it, and the type token `mlstack:<module>:<Class>`.

The token is read off the class (its `super().__init__` call), without the engine; the golden
plans of the shipped stacks, which the engine wrote, vouch that it is the token resources get.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import pkgutil
import textwrap
import typing
from pathlib import Path

import pulumi
import pytest

PACKAGES = ("mlstack.components", "mlstack.policies", "mlstack.workloads.deploy")
GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden"

#: Every component, by module and class: a new one is added here on purpose.
EXPECTED = {
    "mlstack.components.aws.autoscaler.ClusterAutoscaler",
    "mlstack.components.aws.cluster.EksCluster",
    "mlstack.components.aws.identity.PodIdentity",
    "mlstack.components.aws.network.Network",
    "mlstack.components.aws.nodegroups.NodeGroups",
    "mlstack.components.aws.registry.Registry",
    "mlstack.components.aws.storage.Buckets",
    "mlstack.components.gcp.cluster.GkeCluster",
    "mlstack.components.gcp.identity.TeamIdentity",
    "mlstack.components.gcp.kms.Keys",
    "mlstack.components.gcp.network.Network",
    "mlstack.components.gcp.nodepools.NodePools",
    "mlstack.components.gcp.registry.Registry",
    "mlstack.components.gcp.storage.Buckets",
    "mlstack.components.kubernetes.device_plugin.NvidiaDevicePlugin",
    "mlstack.components.kubernetes.extra.ExtraManifests",
    "mlstack.components.kubernetes.jobset.JobSetController",
    "mlstack.components.kubernetes.kueue.Kueue",
    "mlstack.components.kubernetes.metrics_server.MetricsServer",
    "mlstack.components.kubernetes.system.PlatformSystem",
    "mlstack.components.onprem.cluster.ExistingCluster",
    "mlstack.components.onprem.pools.LabeledNodePool",
    "mlstack.policies.component.Tenancy",
    "mlstack.policies.component.TeamTenancy",
    "mlstack.workloads.deploy.inference.InferenceService",
    "mlstack.workloads.deploy.training.TrainingJob",
    "mlstack.workloads.deploy.pipelines.PipelineRunner",
    "mlstack.workloads.deploy.pipelines.PipelineAccess",
}

#: Tokens that break the rule and stay: a component's token is part of the URN of each of its
#: children, so renaming the token makes `pulumi up` replace them all on every deployed stack
#: (a rename needs `aliases` on the component). Class -> (token, what a rename would replace).
HISTORICAL_TOKENS = {
    "mlstack.components.kubernetes.system.PlatformSystem": (
        "mlstack:kubernetes:System",
        "the mlstack-system namespace, the platform ConfigMap and the credentials Secrets",
    ),
    "mlstack.components.onprem.pools.LabeledNodePool": (
        "mlstack:onprem:NodePool",
        "the label and taint patches of existing nodes, which a replace drops and reapplies",
    ),
}

#: Components no shipped stack declares, so no golden plan shows their token.
NOT_IN_SHIPPED_STACKS = {
    "mlstack.components.kubernetes.extra.ExtraManifests": "no shipped stack has extra_manifests",
}


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


def _components() -> list[type[pulumi.ComponentResource]]:
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        for module in pkgutil.walk_packages(package.__path__, f"{package_name}."):
            if not module.name.endswith("__main__"):
                importlib.import_module(module.name)
    found = [c for c in _subclasses(pulumi.ComponentResource) if c.__module__.startswith(PACKAGES)]
    return sorted(found, key=_qualified)


COMPONENTS = _components()


def rule_token(cls: type) -> str:
    """`mlstack:<module>:<Class>`: the cloud or add-on folder under components/, else the
    package (policies, workloads)."""
    parts = cls.__module__.split(".")
    module = parts[2] if parts[1] == "components" else parts[1]
    return f"mlstack:{module}:{cls.__name__}"


def declared_token(cls: type) -> str:
    """The first argument of the `super().__init__(...)` call in the class's constructor."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls.__init__)))
    tokens = [
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "__init__"
        and isinstance(node.func.value, ast.Call)
        and isinstance(node.func.value.func, ast.Name)
        and node.func.value.func.id == "super"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ]
    assert len(tokens) == 1, f"{_qualified(cls)} calls super().__init__ with a literal token once"
    return tokens[0]


def golden_tokens() -> set[str]:
    """Component tokens in the golden plans: each line is `type name parent-type parent-name`."""
    tokens = set()
    for path in GOLDEN.glob("*/resources.txt"):
        for line in path.read_text().splitlines():
            fields = line.split()
            tokens |= {t for t in (fields[0], fields[2]) if t.startswith("mlstack:")}
    return tokens


def test_every_component_is_checked() -> None:
    assert {_qualified(c) for c in COMPONENTS} == EXPECTED


@pytest.mark.parametrize("cls", COMPONENTS, ids=_qualified)
def test_constructor_is_name_args_opts(cls: type[pulumi.ComponentResource]) -> None:
    params = list(inspect.signature(cls.__init__).parameters.values())
    assert [p.name for p in params] == ["self", "name", "args", "opts"]
    assert all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params)
    assert [p.default for p in params] == [inspect.Parameter.empty] * 3 + [None]
    hints = typing.get_type_hints(cls.__init__)
    assert hints["name"] is str
    assert hints["opts"] == pulumi.ResourceOptions | None


@pytest.mark.parametrize("cls", COMPONENTS, ids=_qualified)
def test_args_are_a_frozen_dataclass_beside_the_component(
    cls: type[pulumi.ComponentResource],
) -> None:
    args = typing.get_type_hints(cls.__init__)["args"]
    assert isinstance(args, type) and dataclasses.is_dataclass(args)
    assert vars(args)["__dataclass_params__"].frozen
    assert (args.__module__, args.__name__) == (cls.__module__, f"{cls.__name__}Args")


@pytest.mark.parametrize("cls", COMPONENTS, ids=_qualified)
def test_type_token_is_mlstack_module_class(cls: type[pulumi.ComponentResource]) -> None:
    token = declared_token(cls)
    historical = HISTORICAL_TOKENS.get(_qualified(cls))
    if historical is None:
        assert token == rule_token(cls)
    else:
        kept, _replaced = historical
        assert token == kept
        assert kept != rule_token(cls), "the token follows the rule now: drop the exception"


def test_exceptions_name_existing_components() -> None:
    assert set(HISTORICAL_TOKENS) <= EXPECTED
    assert set(NOT_IN_SHIPPED_STACKS) <= EXPECTED


def test_tokens_are_the_ones_the_engine_recorded() -> None:
    """The golden plans hold only tokens read off the classes, and each class's token is in
    some shipped stack's plan unless listed as absent from all of them."""
    declared = {_qualified(c): declared_token(c) for c in COMPONENTS}
    recorded = golden_tokens()
    assert recorded <= set(declared.values())
    missing = {name for name, token in declared.items() if token not in recorded}
    assert missing == set(NOT_IN_SHIPPED_STACKS)
