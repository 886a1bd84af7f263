"""A Flower ``Grid`` that runs a ClientApp in this process: no Ray, no SuperLink.

For tests, benchmarks and quick experiments with the real strategy, mods and
``Message`` objects (``strategy.start(grid=LocalGrid(app, range(1, 11)), ...)``).  Every
node keeps its own ``Context`` (and so its ``context.state``) across rounds, as in a
simulation.  Override :meth:`LocalGrid.deliver` to observe or alter what travels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from flwr.app import Context, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.run import Run

__all__ = ["LocalGrid"]


class LocalGrid(Grid):
    """Delivers messages to ``app`` in this process, one ``Context`` per node.

    Parameters
    ----------
    app : callable
        A ``ClientApp`` (or any ``(message, context) -> reply``).
    node_ids : iterable of int
        The nodes; :attr:`nodes` (what :meth:`get_node_ids` offers) may be changed
        between rounds, e.g. to draw the participants.
    """

    def __init__(self, app: Callable[[Message, Context], Message], node_ids: Iterable[int]) -> None:
        self.app = app
        self.nodes = list(node_ids)
        self.contexts = {
            n: Context(run_id=1, node_id=n, node_config={}, state=RecordDict(), run_config={})
            for n in self.nodes
        }

    def set_run(self, run: Run) -> None:
        """Not used in process."""

    @property
    def run(self) -> Run:
        """Not used in process."""
        raise NotImplementedError

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        """An instruction message to ``dst_node_id``."""
        return Message(content, dst_node_id, message_type, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        """The nodes on offer."""
        return list(self.nodes)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Not used in process."""
        raise NotImplementedError

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Not used in process."""
        raise NotImplementedError

    def send_and_receive(
        self, messages: Iterable[Message], timeout: float | None = None
    ) -> Iterable[Message]:
        """Run the ClientApp for every message; the replies in order."""
        return [self.deliver(msg) for msg in messages]

    def deliver(self, msg: Message) -> Message:
        """One message to its node's ClientApp (override to observe or alter)."""
        node = msg.metadata.dst_node_id
        if node not in self.contexts:
            self.contexts[node] = Context(
                run_id=1, node_id=node, node_config={}, state=RecordDict(), run_config={}
            )
        return self.app(msg, self.contexts[node])
