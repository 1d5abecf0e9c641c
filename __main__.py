"""The Pulumi program: `pulumi up` runs this, and so does `mlstack plan` under mocks."""

from mlstack.stacks.program import main

main()
