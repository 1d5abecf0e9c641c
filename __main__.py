"""The Pulumi program: `pulumi up` runs this, and so does `mlstack plan` under mocks."""

from stacks.program import main

main()
