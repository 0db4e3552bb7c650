"""``mlcanary local`` and ``mlcanary demo``: the targets of the ``mlcanary.commands`` entry points.

The operator's CLI finds these through entry points, never by importing this package, so the operator
image (which ships only ``mlcanary``) carries none of the local stack. Heavy modules load only once a
command runs.
"""

from __future__ import annotations


def local(argv: list[str]) -> int:
    from mlcanary_local import stack

    return stack.main(argv)


def demo(argv: list[str]) -> int:
    from mlcanary_local.demo import story

    return story.main(argv)
