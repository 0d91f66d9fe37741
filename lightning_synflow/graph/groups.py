"""Channel groups: the channels of layers tied together (by additions), which go or stay as one."""

from __future__ import annotations


class ChannelGroups:
    """Union-find over channel groups (channels tied by additions are one group).

    A group is a number; :meth:`find` gives the group that stands for all those tied to it (its root). A
    fixed group keeps all its channels (it reaches the model's output, or a part that is not followed).
    """

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.size: list[int] = []
        self.fixed: list[bool] = []

    def new(self, size: int) -> int:
        """A new group of ``size`` channels, tied to nothing yet."""
        self.parent.append(len(self.parent))
        self.size.append(size)
        self.fixed.append(False)
        return len(self.parent) - 1

    def find(self, group: int) -> int:
        """The root of ``group``: the same for all groups tied together."""
        while self.parent[group] != group:
            self.parent[group] = self.parent[self.parent[group]]
            group = self.parent[group]
        return group

    def union(self, a: int, b: int) -> None:
        """Tie groups ``a`` and ``b`` (of the same size): a channel goes from both or from neither."""
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra
            self.fixed[ra] = self.fixed[ra] or self.fixed[rb]

    def fix(self, group: int) -> None:
        """Keep every channel of ``group`` and of the groups tied to it."""
        self.fixed[self.find(group)] = True
