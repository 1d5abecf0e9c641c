"""Pulumi ComponentResources: one backend per cloud, and the Kubernetes add-ons."""

import pulumi

#: The `opts` of every mlstack component: each is `(name, args, opts: Options = None)`, with
#: `args` a frozen `<Class>Args` (tests/components/test_component_shape.py holds them to it).
Options = pulumi.ResourceOptions | None
